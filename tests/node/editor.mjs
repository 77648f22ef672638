// The editor at / driven in Debian's Chromium by playwright-core, as two
// users would use it, for tests/e2e/editor.rs. Prints one JSON line per
// check ({"check", "ok", ...figures}); exits 1 at the first that fails.
//
//   node editor.mjs <server url> <site folder> <artifacts folder> [full|unconfigured-ai]
//
// `full`: two contexts edit one document (text, presence, cursors), the
// preview follows typing, a syntax error shows its line and column,
// packages from /npm/ (zustand, date-fns) with one React, a package that
// cannot be imported named with the reason, save and reload (the colour
// stays), a revert
// every collaborator sees and can undo, the screenshot button, the
// explain panel (the fake provider), offline reload (the shell, the
// document's text, "offline" and why no preview), a new site version, the
// kill switch.
// `unconfigured-ai`: the explain panel against a server whose AI routes
// have no provider key says so.
// Screenshots of each step go to the artifacts folder.
import { chromium } from 'playwright-core';
import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const [url, siteDir, artifacts, mode = 'full'] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const STEP = 30_000;

const say = (value) => process.stdout.write(JSON.stringify(value) + '\n');

// `promise`, or `fallback` after `ms`: page.evaluate has no deadline of
// its own, and one that never settles (seen while a service worker was
// being replaced) must not hang the run.
const bounded = (promise, ms = 5_000, fallback = undefined) =>
  Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve(fallback), ms))]);

// The whole run ends well within the Rust test's deadline, saying where.
setTimeout(() => {
  say({ check: current, ok: false, error: 'the run took more than 480 s' });
  process.exit(1);
}, 480_000).unref();
let current = 'start';
// A check that hangs (an evaluate has no timeout of its own) fails by
// name after this long.
const CHECK_LIMIT = 120_000;

async function check(name, body) {
  current = name;
  let timer;
  const hung = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_LIMIT} ms`)), CHECK_LIMIT);
  });
  try {
    const figures = await Promise.race([body(), hung]);
    say({ check: name, ok: true, ...(figures ?? {}) });
  } finally {
    clearTimeout(timer);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.SPIKE_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  timeout: STEP,
});

const pages = [];

async function user(name, doc) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  pages.push([name, page]);
  page.setDefaultTimeout(STEP);
  page.on('pageerror', (e) => say({ pageerror: name, message: e.message }));
  await page.goto(`${url}/?doc=${doc}`);
  await page.locator('.cm-content').waitFor();
  if (name) {
    await page.fill('#user-name', name);
    await page.click('#sign-in button');
    await page.locator('#signed-in').waitFor({ state: 'visible' });
  }
  return { context, page };
}

// The page exposes its document as `window.spikeEditor` (main.js).
const text = (page) => bounded(page.evaluate(() => window.spikeEditor?.text() ?? ''), 5_000, '');
const shot = (page, file) => page.screenshot({ path: join(artifacts, file) });

/** Replaces the whole document by typing into the editor. */
async function retype(page, source) {
  await page.locator('.cm-content').click();
  await page.keyboard.press('Control+A');
  await page.keyboard.insertText(source);
}

const app = (title) => `import { useState } from "react";

export default function App() {
  const [n, setN] = useState(0);
  return (
    <main>
      <h1>${title}</h1>
      <button onClick={() => setN(n + 1)}>clicked {n}</button>
    </main>
  );
}
`;

async function until(what, test, limit = STEP) {
  const end = Date.now() + limit;
  for (;;) {
    const value = await test();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function full() {
  const doc = `t${Date.now().toString(36)}`;
  const ann = await user('Ann', doc);
  const bob = await user('Bob', doc);

  await check('both see the document', async () => {
    for (const u of [ann, bob]) await until('the template', async () => (await text(u.page)).includes('Hello from spike'));
  });

  await check('presence', async () => {
    for (const [u, other] of [[ann, 'Bob'], [bob, 'Ann']]) {
      await u.page.locator('#presence li', { hasText: other }).waitFor();
    }
    return { ann: await ann.page.locator('#presence li').allTextContents() };
  });

  await check('text and cursors reach the other editor', async () => {
    await ann.page.locator('.cm-content').click();
    await ann.page.keyboard.press('Control+End');
    await ann.page.keyboard.insertText('\n// a line from Ann');
    await until('Ann\'s line at Bob', async () => (await text(bob.page)).includes('// a line from Ann'));
    // y-codemirror.next draws the other's caret with their name.
    await bob.page.locator('.cm-ySelectionInfo', { hasText: 'Ann' }).waitFor({ state: 'attached' });
    await shot(ann.page, 'ann-editing.png');
    await shot(bob.page, 'bob-sees-ann.png');
  });

  await check('the preview follows typing', async () => {
    const title = `Preview ${Date.now()}`;
    const h1 = ann.page.frameLocator('#preview').locator('h1', { hasText: title });
    const started = Date.now();
    await retype(ann.page, app(title));
    await h1.waitFor();
    const ms = Date.now() - started;
    // Bob's preview follows his copy of the text.
    await bob.page.frameLocator('#preview').locator('h1', { hasText: title }).waitFor();
    await ann.page.frameLocator('#preview').locator('button').click();
    await ann.page.frameLocator('#preview').locator('button', { hasText: 'clicked 1' }).waitFor();
    // The document's code runs in an opaque origin: a collaborator's code
    // cannot read this user's session.
    const preview = ann.page.frames().find((f) => f !== ann.page.mainFrame());
    const reach = await preview.evaluate(() => {
      try {
        return `read ${localStorage.getItem('spike.session') ?? ''}${document.cookie}`;
      } catch (e) {
        return `refused: ${e.name}`;
      }
    });
    if (!reach.startsWith('refused')) throw new Error(`the preview reached the session: ${reach}`);
    // Nor can a script of the editor's own origin: the session cookie is
    // HttpOnly and the page keeps no token.
    const own = await bounded(ann.page.evaluate(() => `${localStorage.getItem('spike.session') ?? ''} ${document.cookie}`), 5_000, null);
    const cookies = await ann.context.cookies();
    const session = cookies.find((c) => c.name === '__session');
    if (own === null || own.includes('__session') || own.includes('token') || own.includes('eyJ')) {
      throw new Error(`a page script reads the session: ${own}`);
    }
    if (!session?.httpOnly || session.sameSite !== 'Strict') {
      throw new Error(`the session cookie is ${JSON.stringify(session)}`);
    }
    await shot(ann.page, 'preview.png');
    return { ms };
  });

  await check('a syntax error shows its line and column', async () => {
    const broken = 'export default function App() {\n  return <main>\n}\n';
    const expected = await (await fetch(`${url}/transpile`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ code: broken, loader: 'tsx' }),
    })).json();
    const { line, column } = expected.diagnostics[0];
    await retype(ann.page, broken);
    const problem = ann.page.locator('#problems', { hasText: `Syntax error at ${line}:${column}:` });
    await problem.waitFor({ state: 'visible' });
    await shot(ann.page, 'syntax-error.png');
    return { line, column, shown: await problem.textContent() };
  });

  await check('packages from npm share one React', async () => {
    // zustand's hook calls React's through the page's import map, date-fns
    // is hundreds of modules: both from the server's /npm/. A second React
    // would make the hook throw ("Invalid hook call") and nothing render.
    await retype(ann.page, `import { create } from "zustand";
import { format } from "date-fns";
const useCount = create((set) => ({ n: 0, inc: () => set((s) => ({ n: s.n + 1 })) }));
export default function App() {
  const { n, inc } = useCount();
  return <main><h2>{format(new Date(2020, 0, 2), "yyyy-MM-dd")}</h2><button onClick={inc}>zustand {n}</button></main>;
}
`);
    const frame = ann.page.frameLocator('#preview');
    const started = Date.now();
    await frame.locator('h2', { hasText: '2020-01-02' }).waitFor({ timeout: 120_000 });
    const ms = Date.now() - started;
    await frame.locator('button').click();
    await frame.locator('button', { hasText: 'zustand 1' }).waitFor();
    await shot(ann.page, 'npm-packages.png');
    return { ms };
  });

  await check('a package that cannot be imported is named', async () => {
    await retype(ann.page, 'import confetti from "no-such-package-here";\nexport default function App() {\n  confetti();\n  return <p>hi</p>;\n}\n');
    const problem = ann.page.locator('#problems', { hasText: 'cannot import no-such-package-here: the registry has no package' });
    await problem.waitFor({ state: 'visible', timeout: 30_000 });
    // Long lines wrap in the half-width editor.
    await ann.page.locator('.cm-content.cm-lineWrapping').waitFor();
    return { shown: await problem.textContent() };
  });

  const ownColor = (page) => bounded(page.evaluate(() =>
    [...document.querySelectorAll('#presence li')].find((li) => li.textContent.endsWith('(you)'))?.style.getPropertyValue('--who')), 5_000, null);

  const saved = app('Saved by Ann');
  await check('save, reload: the document is back', async () => {
    await retype(ann.page, saved);
    await until('the problem clears', async () => ann.page.locator('#problems').isHidden());
    await ann.page.click('#save');
    await ann.page.locator('#saved-state', { hasText: 'version 1, up to date' }).waitFor();
    const color = await until('Ann\'s colour', () => ownColor(ann.page));
    await ann.page.reload();
    await until('the text after reload', async () => (await text(ann.page)) === saved);
    await ann.page.locator('#saved-state', { hasText: 'version 1, up to date' }).waitFor();
    // Her colour is hers, before and after the reload.
    const after = await until('Ann\'s colour after the reload', () => ownColor(ann.page));
    if (after !== color) throw new Error(`Ann's colour was ${color}, is ${after} after a reload`);
    const stored = await bounded(ann.page.evaluate(async (d) => (await fetch(`/my-cms/editor/${d}.tsx`)).text(), doc), 10_000, null);
    if (stored !== saved) throw new Error(`the CMS holds ${JSON.stringify(stored)}`);
    // Revert brings the saved copy back over later edits.
    await retype(ann.page, app('Not saved'));
    await ann.page.click('#revert');
    await until('the reverted text', async () => (await text(ann.page)) === saved);
  });

  await check('a revert is the document\'s: seen, announced and undoable', async () => {
    // Bob never saved: he sees Ann's saved copy of the document.
    await bob.page.locator('#saved-state', { hasText: 'saved by Ann: version 1' }).waitFor();
    // Bob's unsaved paragraph, then Ann's revert takes it away...
    const paragraph = '// Bob\'s unsaved paragraph';
    await bob.page.locator('.cm-content').click();
    await bob.page.keyboard.press('Control+End');
    await bob.page.keyboard.insertText(`\n${paragraph}`);
    await until('Bob\'s paragraph at Ann', async () => (await text(ann.page)).includes(paragraph));
    await ann.page.click('#revert');
    for (const u of [ann, bob]) await until('the reverted text', async () => (await text(u.page)) === saved);
    // ...Bob is told who did it, and undoes it for both.
    const notice = bob.page.locator('#notice', { hasText: 'Ann reverted the document' });
    await notice.waitFor();
    await shot(bob.page, 'revert-notice.png');
    await bob.page.click('#notice-undo');
    for (const u of [ann, bob]) await until('the paragraph back', async () => (await text(u.page)).includes(paragraph));
    await ann.page.locator('#notice', { hasText: 'Bob undid Ann\'s revert' }).waitFor();
    // Ann's own undo takes her revert back too.
    await ann.page.click('#revert');
    await until('reverted again', async () => (await text(bob.page)) === saved);
    await ann.page.locator('.cm-content').click();
    await ann.page.keyboard.press('Control+z');
    for (const u of [ann, bob]) await until('undone by Ann', async () => (await text(u.page)).includes(paragraph));
    // The footer's news is cleared once old; it never speaks of shells.
    await ann.page.locator('#status', { hasText: 'Ctrl+Z undoes it' }).waitFor();
    await until('the footer cleared', async () => (await ann.page.locator('#status').textContent()) === '', 15_000);
    await retype(ann.page, saved);
  });

  await check('the screenshot button', async () => {
    await ann.page.click('#screenshot');
    const failed = ann.page.locator('#explanation', { hasText: 'No screenshot' });
    await ann.page.locator('#shot:visible').or(failed).waitFor({ timeout: 60_000 });
    if (await failed.isVisible()) throw new Error(await failed.textContent());
    const png = await ann.page.locator('#shot').evaluate(async (img) => {
      const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
      return { width: img.naturalWidth, b64: btoa(String.fromCharCode(...bytes)) };
    });
    const bytes = Buffer.from(png.b64, 'base64');
    if (bytes.subarray(1, 4).toString() !== 'PNG') throw new Error('not a PNG');
    writeFileSync(join(artifacts, 'screenshot-button.png'), bytes);
    await shot(ann.page, 'screenshot-panel.png');
    return { width: png.width, bytes: bytes.length };
  });

  await check('the explain panel streams', async () => {
    await ann.page.click('#explain');
    const out = ann.page.locator('#explanation');
    await ann.page.locator('#explanation[data-done]').waitFor();
    await shot(ann.page, 'explain.png');
    // Shown as the provider's events came: one piece each.
    return { text: (await out.textContent()).slice(0, 120), pieces: Number(await out.getAttribute('data-pieces')) };
  });

  await check('offline reload shows the shell', async () => {
    const { page, context } = ann;
    await until('the service worker controls the page', () =>
      // (`ready` never settles while nothing is registered.)
      bounded(page.evaluate(() => navigator.serviceWorker.ready.then(() => !!navigator.serviceWorker.controller)), 5_000, false),
    );
    await context.setOffline(true);
    await page.reload();
    await page.locator('.cm-editor').waitFor();
    // Said as it is: offline, and why there is no preview.
    await page.locator('#connection[data-state="offline"]', { hasText: 'offline' }).waitFor();
    await page.locator('#problems', { hasText: 'No preview while offline' }).waitFor();
    // The browser's copy of the document (IndexedDB) shows the text.
    await until('the text offline', async () => (await text(page)) === saved);
    await shot(page, 'offline.png');
    const footer = await page.locator('#status').textContent();
    if (footer.includes('shell') || footer.includes('version')) throw new Error(`the footer says ${footer}`);
    await context.setOffline(false);
  });

  const version = async () => (await (await fetch(`${url}/sw-config.json`)).json());
  await check('a new version is picked up on reload', async () => {
    const { page } = ann;
    await page.reload();
    const before = (await version()).version;
    writeFileSync(join(siteDir, `release-${Date.now()}.txt`), 'a new build\n');
    const after = await until('the site rescanned', async () => {
      const v = (await version()).version;
      return v !== before && v;
    });
    const caches = await until('the new worker took over', async () => {
      // A reload while the new worker takes over may never reach `load`:
      // that try counts as "not yet", and the next one goes on.
      await page.reload({ timeout: 10_000 }).catch(() => {});
      // So does an evaluation the worker's reload interrupts.
      const keys = await bounded(page.evaluate(() => caches.keys()).catch(() => []), 5_000, []);
      return keys.includes(`spike-shell-${after}`) && !keys.includes(`spike-shell-${before}`) && keys;
    });
    return { before, after, caches };
  });

  await check('the kill switch removes the worker', async () => {
    const { page } = ann;
    const kill = join(siteDir, 'sw-kill-switch');
    writeFileSync(kill, '');
    try {
      await until('the kill switch on', async () => (await version()).killSwitch);
      await until('no worker, no caches', async () => {
        await page.reload();
        return bounded(page.evaluate(async () =>
          (await navigator.serviceWorker.getRegistrations()).length === 0 && (await caches.keys()).length === 0), 5_000, false);
      });
    } finally {
      rmSync(kill, { force: true });
    }
  });
}

async function unconfiguredAi() {
  const ann = await user('Ann', `t${Date.now().toString(36)}`);
  await check('explain says no provider is configured', async () => {
    await ann.page.click('#explain');
    const out = ann.page.locator('#explanation', { hasText: 'No AI provider is configured here' });
    await out.waitFor();
    await shot(ann.page, 'explain-unconfigured.png');
    return { text: await out.textContent() };
  });
}

try {
  await (mode === 'full' ? full() : unconfiguredAi());
} catch (e) {
  // What each page said, and how it looked.
  const said = {};
  for (const [name, page] of pages) {
    said[name] = await bounded(page.evaluate(() => Object.fromEntries(
      ['status', 'saved-state', 'problems', 'explanation', 'connection']
        .map((id) => [id, document.getElementById(id)?.textContent ?? null]),
    )).catch((err) => String(err)), 5_000, 'no answer');
    await bounded(shot(page, `failed-${name}.png`).catch(() => {}));
  }
  say({ check: current, ok: false, error: String(e?.stack ?? e), pages: said });
  await bounded(browser.close());
  process.exit(1);
}
await browser.close();
