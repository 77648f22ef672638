// A restart under load: HTTP clients and room members keep working while
// spike is stopped with SIGTERM and started again on the same data, as a
// supervisor (systemd, Kubernetes) does it. Prints one JSON object: how
// long the stop and the start took, how long and how often HTTP clients
// were refused, what the room members were told, whether each came back,
// and whether any missed an event.
//
//   node bench/restart.mjs SPIKE PLUGINS DATA PORT [MEMBERS] [SECONDS]
//
// HTTP: 16 clients in a loop of GET /hello (keep-alive), retrying a
// failed request after 5 ms. Rooms: MEMBERS (200) members of 20 relay
// rooms at /chat, each sending a message every 250 ms; a member whose
// socket closes reconnects every 50 ms with `since` = the last event it
// saw, and checks that the events then continue it with no gap.
import { spawn } from 'node:child_process';
import http from 'node:http';
import WebSocket from 'ws';

const [spikeBin, plugins, data, port, membersArg, secondsArg] = process.argv.slice(2);
const MEMBERS = Number(membersArg ?? 200);
const SECONDS = Number(secondsArg ?? 4);
const ROOMS = 20;
const base = `http://127.0.0.1:${port}`;
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startSpike() {
  const child = spawn(spikeBin, ['serve', '--listen', `127.0.0.1:${port}`, '--plugins', plugins,
    '--data', data, '--no-watch'], { stdio: ['ignore', 'ignore', 'inherit'] });
  child.exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return child;
}

function get(agent, path) {
  return new Promise((resolve) => {
    const req = http.get(`${base}${path}`, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? 'ok' : `status ${res.statusCode}`));
      res.on('error', (e) => resolve(e.code ?? e.message));
    });
    req.on('error', (e) => resolve(e.code ?? e.message));
  });
}

async function ready() {
  const agent = new http.Agent();
  while ((await get(agent, '/readyz')) !== 'ok') await sleep(20);
}

// --- HTTP load ---
const outcomes = {};
let firstFailure = null, lastFailure = null, running = true;
async function httpClient() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  while (running) {
    const outcome = await get(agent, '/hello');
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    if (outcome !== 'ok') {
      firstFailure ??= now();
      lastFailure = now();
      await sleep(5);
    }
  }
}

// --- room members ---
const closes = {};
const members = [];
function member(i) {
  const m = { room: `r${i % ROOMS}`, last: 0, gaps: 0, closedAt: null, reconnects: [], open: false, sent: 0 };
  const connect = () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/chat/${m.room}?since=${m.last}`);
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString());
      if (frame.type === 'welcome') {
        m.open = true;
        if (m.closedAt !== null) {
          m.reconnects.push(now() - m.closedAt);
          m.closedAt = null;
        }
      } else if (frame.type === 'event') {
        if (frame.seq !== m.last + 1) m.gaps++;
        m.last = frame.seq;
      }
    });
    ws.on('close', (code) => {
      if (m.open && running) {
        closes[code] = (closes[code] ?? 0) + 1;
        m.closedAt = now();
      }
      m.open = false;
      if (running) setTimeout(connect, 50);
    });
    ws.on('error', () => {});
    m.ws = ws;
  };
  connect();
  m.timer = setInterval(() => {
    if (m.open) {
      m.ws.send(`member ${i} message ${m.sent++}`);
    }
  }, 250);
  return m;
}

let spike = startSpike();
await ready();
for (let i = 0; i < MEMBERS; i++) members.push(member(i));
while (members.some((m) => !m.open)) await sleep(20);
const clients = Array.from({ length: 16 }, httpClient);
await sleep(SECONDS * 1000);

const term = now();
spike.kill('SIGTERM');
const first = await spike.exited;
const stopped = now();
spike = startSpike();
await ready();
const readyAt = now();
// Everyone back, or 30 s.
while (members.some((m) => !m.open) && now() - readyAt < 30000) await sleep(20);
const allBack = now();
await sleep(SECONDS * 1000);
running = false;
for (const m of members) {
  clearInterval(m.timer);
  m.ws.close();
}
await Promise.all(clients);
spike.kill('SIGTERM');
const second = await spike.exited;

const reconnects = members.flatMap((m) => m.reconnects).sort((a, b) => a - b);
const ms = (x) => Math.round(x);
console.log(JSON.stringify({
  stop_ms: ms(stopped - term),
  exit: first,
  start_to_ready_ms: ms(readyAt - stopped),
  refused_window_ms: firstFailure === null ? 0 : ms(lastFailure - firstFailure),
  http: outcomes,
  members: MEMBERS,
  closes,
  reconnected: members.filter((m) => m.open || m.reconnects.length > 0).length,
  reconnect_p50_ms: ms(reconnects[Math.floor(reconnects.length / 2)] ?? 0),
  reconnect_max_ms: ms(reconnects[reconnects.length - 1] ?? 0),
  all_back_after_term_ms: ms(allBack - term),
  gaps: members.reduce((n, m) => n + m.gaps, 0),
  second_exit: second,
}));
