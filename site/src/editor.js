// The code editor: CodeMirror 6 bound to a Yjs document that spike keeps
// in a room (`/yjs/<room>`, y-websocket's protocol), with everyone's
// cursors and selections through Yjs awareness. A copy is kept in the
// browser (IndexedDB), so an offline reload shows the text and edits made
// offline reach the room on reconnection.
//
// Besides the text, the document holds what every collaborator must see
// alike (the map `meta`): its saved copy (who saved which version), and
// the last revert to it (who, and the text it replaced, so that anyone
// can undo it).

import { EditorView, basicSetup } from 'codemirror';
import { keymap } from '@codemirror/view';
import { Prec } from '@codemirror/state';
import { javascript } from '@codemirror/lang-javascript';
import * as Y from 'yjs';
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next';
import { WebsocketProvider } from 'y-websocket';
import { IndexeddbPersistence } from 'y-indexeddb';

const COLORS = ['#d1495b', '#00798c', '#edae49', '#66a182', '#8e6c8a', '#2e4057', '#e07a5f'];

/** A color for `key`, the same on every client. */
export function colorOf(key) {
  let h = 0;
  for (const c of key) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

/**
 * Opens room `room` in `parent`. `user` is `{ name, key }`. `onText` gets
 * the whole text after every change (local or remote); `onSynced` is
 * called once the first sync is done (the text is the room's); `onPeople` the
 * people here (`[{ name, color, self }]`); `onConnection` the state
 * (`connecting` until the first answer, then `connected` or `offline`);
 * `onMeta` `{ saved, revert, local }` whenever the saved copy or the last
 * revert changes (`local`: this page's own change).
 */
export function open({ parent, room, user, initialText, onText, onSynced, onPeople, onConnection, onMeta }) {
  const doc = new Y.Doc();
  const local = new IndexeddbPersistence(`spike-${room}`, doc);
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const provider = new WebsocketProvider(`${scheme}://${location.host}/yjs`, room, doc);
  const text = doc.getText('code');
  const meta = doc.getMap('meta');
  // Undo is Yjs's, not CodeMirror's history: it undoes this user's own
  // changes only (typing, and a revert), never a collaborator's.
  const undoManager = new Y.UndoManager(text);
  let me = user;
  const setAwareness = () => {
    const color = colorOf(me.key);
    provider.awareness.setLocalStateField('user', { name: me.name, color, colorLight: `${color}33` });
  };
  setAwareness();

  const view = new EditorView({
    parent,
    extensions: [
      Prec.high(keymap.of(yUndoManagerKeymap)),
      basicSetup,
      javascript({ jsx: true, typescript: true }),
      yCollab(text, provider.awareness, { undoManager }),
      // The editor is half the page: long lines wrap rather than scroll.
      EditorView.lineWrapping,
      EditorView.theme({ '&': { height: '100%' }, '.cm-scroller': { fontFamily: 'ui-monospace, monospace' } }),
    ],
  });

  text.observe(() => onText(text.toString()));
  meta.observe((event) => onMeta({ saved: meta.get('saved') ?? null, revert: meta.get('revert') ?? null, local: event.transaction.local }));

  // `connecting` only until the first attempt ends: while the browser is
  // offline, or the server cannot be reached, y-websocket retries and
  // says `connecting` each time, which must read as `offline`.
  let everConnected = false;
  let failed = !navigator.onLine;
  const connection = (status) => {
    if (status === 'connected') {
      everConnected = true;
      failed = false;
    } else if (status === 'disconnected') {
      failed = true;
    }
    const state = status === 'connected' ? 'connected' : failed || !navigator.onLine ? 'offline' : 'connecting';
    onConnection(state, { everConnected });
  };
  provider.on('status', ({ status }) => connection(status));
  addEventListener('offline', () => connection('disconnected'));
  addEventListener('online', () => connection('connecting'));
  connection('connecting');

  // A new, empty room starts from the template, once: only the first
  // client in it fills it (the others see its text arrive).
  provider.once('sync', () => {
    const alone = provider.awareness.getStates().size <= 1;
    if (text.length === 0 && alone) text.insert(0, initialText);
    onText(text.toString());
    onSynced();
  });
  const people = () => {
    const list = [];
    for (const [id, state] of provider.awareness.getStates()) {
      if (state.user) list.push({ ...state.user, self: id === doc.clientID });
    }
    onPeople(list);
  };
  provider.awareness.on('change', people);
  people();

  /** Replaces the whole text in one transaction of this user's, its own
   * step for undo; `also` runs in the same transaction. */
  const replaceAll = (next, also = () => {}) => {
    undoManager.stopCapturing();
    doc.transact(() => {
      text.delete(0, text.length);
      text.insert(0, next);
      also();
    });
    undoManager.stopCapturing();
  };

  return {
    text: () => text.toString(),
    /** Replaces the whole text, as one change everyone sees. */
    replace: (next) => replaceAll(next),
    /** Who is editing: their name and the key their colour comes from. */
    setUser(next) {
      me = next;
      setAwareness();
    },
    /** The document's saved copy `{ text, version, by, at }`, or null. */
    saved: () => meta.get('saved') ?? null,
    /** Records a saved copy for every collaborator. */
    markSaved(copy) {
      meta.set('saved', { ...copy, at: Date.now() });
    },
    /**
     * Puts `copy` (a saved copy) back, as one transaction that records
     * the text it replaced: the others are told, and anyone can undo it
     * (`undoRevert`); this user's own undo undoes it too.
     */
    revert(copy, by) {
      const before = text.toString();
      const id = `${doc.clientID}-${Date.now()}`;
      replaceAll(copy.text, () => {
        meta.set('revert', { id, by, at: Date.now(), version: copy.version, before, after: copy.text });
      });
    },
    /**
     * Undoes the last revert for everyone, if the text is still what the
     * revert left; whether it did.
     */
    undoRevert(by) {
      const revert = meta.get('revert');
      if (!revert || revert.undoneBy || text.toString() !== revert.after) return false;
      replaceAll(revert.before, () => meta.set('revert', { ...revert, undoneBy: by }));
      return true;
    },
    close() {
      provider.destroy();
      local.destroy();
      view.destroy();
      doc.destroy();
    },
  };
}
