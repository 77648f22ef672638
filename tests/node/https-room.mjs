// Loads a page over HTTPS in Debian's Chromium through playwright-core,
// trusting the test CA through the NSS database in HOME (no certificate
// error is ignored), then opens a room's WebSocket from the page and sends
// a message: prints the page's status and protocol (h2) and the room's echo.
//
//   node https-room.mjs URL HOME
import { chromium } from 'playwright-core';

const [url, home] = process.argv.slice(2);
const STEP = 30_000;
const browser = await chromium.launch({
  executablePath: process.env.SPIKE_CHROMIUM ?? '/usr/bin/chromium',
  env: { ...process.env, HOME: home },
  args: ['--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  timeout: STEP,
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const response = await page.goto(url, { timeout: STEP });
  const protocol = await page.evaluate(
    () => performance.getEntriesByType('navigation')[0].nextHopProtocol,
  );
  const room = await page.evaluate(
    (wsUrl) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(wsUrl);
        const seen = [];
        const timer = setTimeout(() => reject(new Error(`no echo: ${JSON.stringify(seen)}`)), 15_000);
        ws.onmessage = (m) => {
          seen.push(m.data);
          if (seen.length === 1) ws.send('hello-from-chromium');
          else if (String(m.data).includes('hello-from-chromium')) {
            clearTimeout(timer);
            ws.close();
            resolve(JSON.parse(m.data));
          }
        };
        ws.onerror = () => reject(new Error(`the socket failed: ${JSON.stringify(seen)}`));
      }),
    new URL('/chat/browser', url).href.replace('https:', 'wss:'),
  );
  const text = await page.textContent('body');
  console.log(JSON.stringify({ status: response.status(), protocol, room, text, errors }));
} finally {
  await browser.close();
}
