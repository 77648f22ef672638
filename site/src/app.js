// Asks the auth plugin who is calling and the site for its version.
const status = document.getElementById("status");

async function main() {
  const [who, config] = await Promise.all([
    fetch("/api/logged_in", { credentials: "include" }),
    fetch("/sw-config.json").then((r) => r.json()),
  ]);
  const whom = who.ok ? `signed in as ${(await who.json()).sub}` : "not signed in";
  status.textContent = `You are ${whom}. Site version ${config.version}.`;
}

main().catch((e) => {
  status.textContent = `Could not reach the server: ${e}`;
});
