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

function status(message) {
  $('status').textContent = message;
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
  for (const id of ['save', 'revert']) $(id).disabled = !user;
  $('saved-state').textContent = user ? '' : 'sign in to save';
}

$('sign-in').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    user = await session.signIn($('user-name').value.trim());
    showUser();
    doc.rename(user.name);
    await showSaved();
  } catch (err) {
    status(`Sign-in failed: ${err.message}`);
  }
});
$('sign-out').addEventListener('click', () => {
  session.signOut();
  user = null;
  savedCopy = null;
  showUser();
  doc.rename(guestKey);
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
        showProblem(err instanceof preview.Problem ? `Syntax error at ${err.message}` : err.message);
      }
    }
  } finally {
    running = false;
  }
}

function onText(text) {
  latest = text;
  if (savedCopy) showSavedState();
  clearTimeout(timer);
  timer = setTimeout(refresh, 120);
}

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
  },
});

// For the console and the browser tests: the document's text and
// replace().
window.spikeEditor = doc;

// Saved copies: the last one seen, and whether the text still matches it.
let savedCopy = null;

function showSavedState() {
  if (!user) return;
  $('saved-state').textContent = savedCopy
    ? `saved: version ${savedCopy.version}${savedCopy.text === doc.text() ? ', up to date' : ', changed since'}`
    : 'not saved yet';
}

async function showSaved() {
  if (!user) return;
  try {
    savedCopy = await documents.load(docName);
    showSavedState();
  } catch (err) {
    $('saved-state').textContent = err.message;
  }
}

$('save').addEventListener('click', async () => {
  try {
    const text = doc.text();
    savedCopy = { text, version: await documents.save(docName, text) };
    showSavedState();
  } catch (err) {
    status(err.message);
  }
});
$('revert').addEventListener('click', async () => {
  try {
    savedCopy = await documents.load(docName);
    if (!savedCopy) return status('There is no saved copy of this document yet.');
    doc.replace(savedCopy.text);
    showSavedState();
  } catch (err) {
    status(err.message);
  }
});

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
  .then((state) => status(`Offline shell: ${state}.`))
  .catch((err) => status(`No offline shell: ${err.message}`));
