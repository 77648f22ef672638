// The editor page: wires the editor (editor.js), the preview (preview.js),
// saved copies (documents.js), the renderer and the AI routes (assist.js),
// sign-in (session.js) and the service worker (offline.js).

import './style.css';
import * as session from './session.js';
import * as editor from './editor.js';
import * as preview from './preview.js';
import * as documents from './documents.js';
import * as assist from './assist.js';
import { registerServiceWorker } from './offline.js';

const $ = (id) => document.getElementById(id);

const TEMPLATE = `import { useState } from "react";

export default function App() {
  const [count, setCount] = useState(0);
  return (
    <main>
      <h1>Hello from spike</h1>
      <p>Edit the code: the preview follows as you type.</p>
      <button onClick={() => setCount(count + 1)}>Clicked {count} times</button>
    </main>
  );
}
`;

// The document: ?doc=<name>, letters, digits, '-' and '_' (it names the
// room and the saved copy).
const params = new URLSearchParams(location.search);
const docName = (params.get('doc') ?? 'welcome').replace(/[^A-Za-z0-9_-]/g, '').slice(0, 64) || 'welcome';
$('doc-name').value = docName;
$('doc-name').addEventListener('change', (e) => {
  const next = e.target.value.replace(/[^A-Za-z0-9_-]/g, '');
  if (next) location.search = `?doc=${next}`;
});

// The footer: the last thing that happened, cleared after a while so that
// an old message is never read as news.
let statusTimer = null;
function status(message) {
  clearTimeout(statusTimer);
  $('status').textContent = message;
  if (message) statusTimer = setTimeout(() => ($('status').textContent = ''), 10_000);
}

// Who is editing: the signed-in user, or a guest name for this tab.
let user = session.restore();
const guestKey = sessionStorage.getItem('spike.guest') ?? `guest-${Math.random().toString(36).slice(2, 7)}`;
sessionStorage.setItem('spike.guest', guestKey);
const identity = () => (user ? { name: user.name, key: user.sub } : { name: guestKey, key: guestKey });

function showUser() {
  $('sign-in').hidden = !!user;
  $('signed-in').hidden = !user;
  $('user-label').textContent = user ? `signed in as ${user.name}` : '';
  $('save').disabled = !user;
  showSavedState();
}

$('sign-in').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    user = await session.signIn($('user-name').value.trim());
    // The colour follows the user, as after a reload.
    doc.setUser(identity());
    showUser();
    await showSaved();
  } catch (err) {
    status(`Sign-in failed: ${err.message}`);
  }
});
$('sign-out').addEventListener('click', () => {
  session.signOut();
  user = null;
  ownCopy = null; // the signed-out user's own saved copy is theirs
  doc.setUser(identity());
  showUser();
});

// The preview follows the text, at most one transpile in flight.
const frame = $('preview');
let latest = '';
let running = false;
let timer = null;

function showProblem(message) {
  $('problems').hidden = !message;
  $('problems').textContent = message ?? '';
}

async function refresh() {
  if (running) return;
  running = true;
  try {
    for (let source = null; source !== latest; ) {
      source = latest;
      try {
        const module = await preview.transpile(source);
        if (source !== latest) continue;
        frame.srcdoc = await preview.page(module);
        showProblem(null);
      } catch (err) {
        if (err instanceof preview.Problem) showProblem(`Syntax error at ${err.message}`);
        else if (!navigator.onLine || err instanceof TypeError) {
          // fetch() itself failed: no answer from the server at all.
          showProblem('No preview while offline: the transpiler runs on the server, and this page cannot reach it. The preview comes back with the connection.');
        } else showProblem(err.message);
      }
    }
  } finally {
    running = false;
  }
}

function onText(text) {
  latest = text;
  showSavedState();
  clearTimeout(timer);
  timer = setTimeout(refresh, 120);
}

// Back online: the preview that could not be made is made now.
addEventListener('online', () => {
  latest = doc.text();
  refresh();
});

addEventListener('message', (e) => {
  if (e.source === frame.contentWindow && e.data?.previewError) {
    showProblem(`The preview failed: ${e.data.previewError}`);
  }
});

function showPeople(people) {
  const list = $('presence');
  list.replaceChildren(
    ...people.map((p) => {
      const li = document.createElement('li');
      li.textContent = p.self ? `${p.name} (you)` : p.name;
      li.style.setProperty('--who', p.color);
      return li;
    }),
  );
}

const doc = editor.open({
  parent: $('editor'),
  room: `editor-${docName}`,
  user: identity(),
  initialText: TEMPLATE,
  onText,
  onSynced: showSaved,
  onPeople: showPeople,
  onConnection: (state) => {
    $('connection').dataset.state = state;
    $('connection').textContent = state;
    $('connection').title = state === 'offline'
      ? 'The server cannot be reached: edits are kept in this browser and sent when it can.'
      : '';
  },
  onMeta: ({ revert, local }) => {
    showSavedState();
    if (!local && revert) showRevertNotice(revert);
  },
});

// For the console and the browser tests: the document's text and
// replace().
window.spikeEditor = doc;

// The saved copy is the document's (every collaborator sees who saved
// which version, and may revert to it); each user's CMS keeps the copies
// they saved. A document saved before it kept its copy falls back to the
// user's own.
let ownCopy = null;
const savedCopy = () => doc.saved() ?? ownCopy;

function showSavedState() {
  const copy = savedCopy();
  $('revert').disabled = !copy;
  if (!copy) {
    $('saved-state').textContent = user ? 'not saved yet' : 'sign in to save';
    return;
  }
  const by = copy.by ? ` by ${copy.by}` : '';
  const fresh = copy.text === doc.text() ? 'up to date' : 'changed since';
  $('saved-state').textContent = `saved${by}: version ${copy.version}, ${fresh}`;
}

async function showSaved() {
  if (user && !doc.saved()) {
    try {
      ownCopy = await documents.load(docName);
    } catch (err) {
      status(err.message);
    }
  }
  showSavedState();
}

$('save').addEventListener('click', async () => {
  try {
    const text = doc.text();
    const version = await documents.save(docName, text);
    doc.markSaved({ text, version, by: user.name });
    status(`Saved version ${version}.`);
  } catch (err) {
    status(err.message);
  }
});
$('revert').addEventListener('click', () => {
  const copy = savedCopy();
  if (!copy) return status('There is no saved copy of this document yet.');
  if (copy.text === doc.text()) return status('The text is the saved copy already.');
  doc.revert(copy, identity().name);
  hideNotice();
  status(`Reverted to the saved copy (version ${copy.version}): Ctrl+Z undoes it.`);
});

// A collaborator's revert replaced the text for everyone: said, with the
// way back.
function hideNotice() {
  $('notice').hidden = true;
}
function showRevertNotice(revert) {
  if (revert.undoneBy) {
    $('notice-text').textContent = `${revert.undoneBy} undid ${revert.by}'s revert.`;
    $('notice-undo').hidden = true;
  } else {
    $('notice-text').textContent = `${revert.by} reverted the document to the saved copy (version ${revert.version}), replacing everyone's changes since.`;
    $('notice-undo').hidden = false;
  }
  $('notice').hidden = false;
}
$('notice-undo').addEventListener('click', () => {
  if (doc.undoRevert(identity().name)) {
    hideNotice();
    status('The revert is undone, for everyone.');
  } else {
    $('notice-text').textContent = 'That revert cannot be undone any more: the text has changed since.';
    $('notice-undo').hidden = true;
  }
});
$('notice-close').addEventListener('click', hideNotice);

// The side panel: a screenshot, or an explanation.
let explaining = null;
function side(title) {
  explaining?.abort();
  explaining = null;
  $('side').hidden = false;
  $('side-title').textContent = title;
  $('shot').hidden = true;
  $('explanation').textContent = '';
}
$('side-close').addEventListener('click', () => {
  explaining?.abort();
  $('side').hidden = true;
});

$('screenshot').addEventListener('click', async () => {
  side('Screenshot (rendered by spike)');
  $('explanation').textContent = 'Rendering…';
  try {
    const png = await assist.screenshot(await preview.page(await preview.transpile(doc.text())));
    $('shot').src = URL.createObjectURL(png);
    $('shot').hidden = false;
    $('explanation').textContent = '';
  } catch (err) {
    $('explanation').textContent = `No screenshot: ${err.message}`;
  }
});

$('explain').addEventListener('click', async () => {
  side('Explain this code');
  const controller = new AbortController();
  explaining = controller;
  const out = $('explanation');
  try {
    let pieces = 0;
    await assist.explain(doc.text(), (piece) => {
      out.append(piece);
      out.dataset.pieces = String(++pieces);
    }, controller.signal);
    out.dataset.done = 'true';
  } catch (err) {
    if (err.name !== 'AbortError') out.textContent = err.message;
  }
});

showUser();
registerServiceWorker()
  .then((state) => {
    if (state === 'offline') status('Offline: this page and your document come from this browser; edits are sent when the server can be reached.');
  })
  .catch((err) => status(`This page will not work offline: ${err.message}`));
