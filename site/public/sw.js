// The editor's service worker: the shell (the page, its hashed assets, the
// React modules) works offline.
//
// spike derives /swVersion.js from the site's files: `self.swVersion`
// changes with any file, `self.swFiles` lists them. The page registers
// this worker as /sw.js?v=<version> (offline.js), so a new build is a new
// script: it installs and takes over at once, and the next reload runs the
// new version.
// /sw-config.json's killSwitch (a file `sw-kill-switch` in the site)
// unregisters the worker and drops its caches.
importScripts('/swVersion.js');

const CACHE = `spike-shell-${self.swVersion}`;
// The shell: what the page needs to start. Other files are cached when
// first fetched.
const SHELL = self.swFiles
  .filter((f) => f === 'index.html' || f.startsWith('assets/') || f.startsWith('vendor/'))
  .map((f) => `/${f}`);

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(['/', ...SHELL])).then(() => self.skipWaiting()),
  );
});

async function killed() {
  try {
    const config = await (await fetch('/sw-config.json', { cache: 'no-store' })).json();
    return config.killSwitch === true;
  } catch {
    return false; // offline: keep serving
  }
}

async function dropEverything() {
  for (const key of await caches.keys()) await caches.delete(key);
  await self.registration.unregister();
}

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    if (await killed()) return dropEverything();
    for (const key of await caches.keys()) if (key !== CACHE) await caches.delete(key);
    await self.clients.claim();
  })());
});

const isShellFile = (url) =>
  url.origin === location.origin && self.swFiles.includes(url.pathname.slice(1));

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (request.mode === 'navigate') {
    // The page from the network when there is one (a new version shows at
    // once), else the cached shell.
    event.respondWith(
      fetch(request)
        .then((resp) => {
          if (resp.ok) caches.open(CACHE).then((c) => c.put('/', resp.clone()));
          return resp;
        })
        .catch(() => caches.match('/', { cacheName: CACHE })),
    );
    return;
  }
  if (!isShellFile(url)) return; // APIs, rooms: always the network
  event.respondWith(
    caches.match(request, { cacheName: CACHE }).then((hit) => hit ?? fetch(request).then((resp) => {
      if (resp.ok) caches.open(CACHE).then((c) => c.put(request, resp.clone()));
      return resp;
    })),
  );
});
