// The code editor: CodeMirror 6 bound to a Yjs document that spike keeps
// in a room (`/yjs/<room>`, y-websocket's protocol), with everyone's
// cursors and selections through Yjs awareness. A copy is kept in the
// browser (IndexedDB), so an offline reload shows the text and edits made
// offline reach the room on reconnection.

import { EditorView, basicSetup } from 'codemirror';
import { javascript } from '@codemirror/lang-javascript';
import * as Y from 'yjs';
import { yCollab } from 'y-codemirror.next';
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
 * (`connecting`, `connected`, `offline`).
 */
export function open({ parent, room, user, initialText, onText, onSynced, onPeople, onConnection }) {
  const doc = new Y.Doc();
  const local = new IndexeddbPersistence(`spike-${room}`, doc);
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const provider = new WebsocketProvider(`${scheme}://${location.host}/yjs`, room, doc);
  const text = doc.getText('code');
  const color = colorOf(user.key);
  provider.awareness.setLocalStateField('user', {
    name: user.name,
    color,
    colorLight: `${color}33`,
  });

  const view = new EditorView({
    parent,
    extensions: [
      basicSetup,
      javascript({ jsx: true, typescript: true }),
      yCollab(text, provider.awareness),
      EditorView.theme({ '&': { height: '100%' }, '.cm-scroller': { fontFamily: 'ui-monospace, monospace' } }),
    ],
  });

  text.observe(() => onText(text.toString()));
  provider.on('status', ({ status }) => {
    onConnection(status === 'connected' ? 'connected' : status === 'disconnected' ? 'offline' : 'connecting');
  });
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

  return {
    text: () => text.toString(),
    /** Replaces the whole text, as one change everyone sees. */
    replace(next) {
      doc.transact(() => {
        text.delete(0, text.length);
        text.insert(0, next);
      });
    },
    rename(name) {
      provider.awareness.setLocalStateField('user', { name, color, colorLight: `${color}33` });
    },
    close() {
      provider.destroy();
      local.destroy();
      view.destroy();
      doc.destroy();
    },
  };
}
