// Registers the service worker (public/sw.js) unless the site's kill
// switch is on, in which case any worker this origin has is removed.

export async function registerServiceWorker() {
  if (!('serviceWorker' in navigator)) return 'unsupported';
  let config = null;
  try {
    config = await (await fetch('/sw-config.json', { cache: 'no-store' })).json();
  } catch {
    // Offline: the worker that served this page stays.
    return 'offline';
  }
  if (config.killSwitch) {
    for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister();
    for (const key of await caches.keys()) await caches.delete(key);
    return 'killed';
  }
  // The version in the worker's URL: a new build is a new script, which
  // the browser installs at once (a byte check of imported scripts alone
  // is not made on every load).
  const script = `/sw.js?v=${encodeURIComponent(config.version)}`;
  await navigator.serviceWorker.register(script, { updateViaCache: 'none' });
  return `version ${config.version}`;
}
