// One side of bench/render.sh: screenshots of one local page (1280x800
// PNG), timed one at a time and then with `concurrency` in flight.
//
//   node bench/render.mjs spike  <page-url> <spike-url> <count> <seconds> <concurrency>
//   node bench/render.mjs launch <page-url> <chromium>  <count>
//   node bench/render.mjs warm   <page-url> <chromium>  <count> <seconds> <concurrency>
//
// spike:  GET /render/screenshot?url=…&cache=no over a kept-alive node:http
//         connection (the cache is bypassed: every call renders).
// launch: the seed system's renderer: puppeteer-core launches Chromium,
//         opens a page, takes the screenshot and closes it, per request.
// warm:   puppeteer-core with one browser kept open, a fresh browser
//         context (and page) per screenshot, closed after it.
// Prints one JSON line per phase (spaced, sequential, concurrent_N):
// {"mode","phase","n","p50_ms","p99_ms","per_s"}.
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import puppeteer from 'puppeteer-core';

const [mode, pageUrl, target, countArg, secondsArg, concurrencyArg] = process.argv.slice(2);
const count = Number(countArg);
const seconds = Number(secondsArg || 0);
const concurrency = Number(concurrencyArg || 1);
const VIEWPORT = { width: 1280, height: 800 };
// The flags of the developers' guide, as spike starts Chromium.
const ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--disable-dev-shm-usage',
  '--hide-scrollbars'];

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

function report(phase, times, elapsedMs) {
  const sorted = [...times].sort((a, b) => a - b);
  console.log(JSON.stringify({
    mode, phase, n: times.length,
    p50_ms: +percentile(sorted, 0.5).toFixed(1),
    p99_ms: +percentile(sorted, 0.99).toFixed(1),
    per_s: +(times.length / (elapsedMs / 1000)).toFixed(2),
  }));
}

// Runs `shot` `count` times with a pause of 700 ms before each (the browser
// idle, its next context ready: a render as a user meets it when renders
// do not arrive back to back), then `count` times in a row, then as many
// as fit in `seconds` with `concurrency` in flight.
async function measure(shot, spaced = true) {
  await shot(); // warm-up
  let times = [];
  let started = performance.now();
  if (spaced) {
    for (let i = 0; i < count; i++) {
      await new Promise((r) => setTimeout(r, 700));
      const t = performance.now();
      await shot();
      times.push(performance.now() - t);
    }
    report('spaced', times, performance.now() - started);
  }
  times = [];
  started = performance.now();
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await shot();
    times.push(performance.now() - t);
  }
  report('sequential', times, performance.now() - started);
  if (!seconds) return;
  times = [];
  started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < until) {
      const t = performance.now();
      await shot();
      times.push(performance.now() - t);
    }
  }));
  report(`concurrent_${concurrency}`, times, performance.now() - started);
}

const profiles = [];
process.on('exit', () => profiles.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

function launch() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-render-'));
  profiles.push(userDataDir);
  return puppeteer.launch({ executablePath: target, headless: true, args: ARGS, userDataDir });
}

async function screenshotIn(page) {
  await page.setViewport(VIEWPORT);
  await page.goto(pageUrl, { waitUntil: 'load' });
  const png = await page.screenshot({ type: 'png' });
  if (png.length < 1000) throw new Error('screenshot too small');
}

if (mode === 'spike') {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const url = `${target}/render/screenshot?url=${encodeURIComponent(pageUrl)}&width=1280&height=800&cache=no`;
  const shot = () => new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        if (res.statusCode !== 200 || body.length < 1000) {
          reject(new Error(`spike answered ${res.statusCode}: ${body.toString().slice(0, 200)}`));
        } else resolve();
      });
    }).on('error', reject);
  });
  await measure(shot);
  agent.destroy();
} else if (mode === 'launch') {
  await measure(async () => {
    const browser = await launch();
    try {
      const page = await browser.newPage();
      await screenshotIn(page);
    } finally {
      await browser.close();
    }
  }, false);
} else if (mode === 'warm') {
  const browser = await launch();
  await measure(async () => {
    const context = await browser.createBrowserContext();
    try {
      const page = await context.newPage();
      await screenshotIn(page);
    } finally {
      await context.close();
    }
  });
  await browser.close();
} else {
  console.error('mode: spike, launch or warm');
  process.exit(2);
}
