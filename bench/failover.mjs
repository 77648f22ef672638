// Failover of a room between two spike nodes on one JetStream: a client
// stores 20 events through node 1 (the room's owner), node 1 is killed
// (SIGKILL), and the client reconnects to node 2 with `since` until an
// event it sends is stored again. Prints one JSON line: the time from the
// kill to that event, and whether the log came back whole.
//
//   node bench/failover.mjs <node1 ws url> <node2 ws url> <node1 pid>
import WebSocket from "ws";

const [first, second, pid] = process.argv.slice(2);

function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const frames = [];
    let wake = null;
    ws.on("message", (data) => {
      frames.push(JSON.parse(data.toString()));
      if (wake) wake();
    });
    ws.next = async () => {
      while (frames.length === 0) await new Promise((r) => (wake = r));
      return frames.shift();
    };
    ws.nextEvent = async () => {
      for (;;) {
        const frame = await ws.next();
        if (frame.type === "event") return frame;
      }
    };
    ws.once("open", async () => {
      const welcome = await ws.next();
      resolve({ ws, welcome });
    });
    ws.once("unexpected-response", (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once("error", reject);
  });
}

const { ws } = await open(first);
for (let k = 1; k <= 20; k++) ws.send(`m${k}`);
for (let k = 1; k <= 20; k++) {
  const event = await ws.nextEvent();
  if (event.seq !== k) throw new Error(`event ${event.seq}, expected ${k}`);
}
const killed = performance.now();
process.kill(Number(pid), "SIGKILL");
let attempts = 0;
let client;
for (;;) {
  attempts++;
  try {
    client = await open(`${second}?since=20`);
    break;
  } catch {
    await new Promise((r) => setTimeout(r, 20));
  }
}
client.ws.send("after");
const after = await client.ws.nextEvent();
const failoverMs = performance.now() - killed;
const reader = await open(`${second}?since=0`);
const seqs = [];
for (let k = 1; k <= 21; k++) seqs.push((await reader.ws.nextEvent()).seq);
const whole = after.seq === 21 && seqs.every((s, i) => s === i + 1);
console.log(JSON.stringify({ failover_ms: Math.round(failoverMs), attempts, whole }));
process.exit(0);
