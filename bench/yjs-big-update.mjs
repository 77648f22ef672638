// Times one large y-websocket update: a client whose document holds
// `mib` MiB of text connects and syncs (its sync step 2 is one message).
//   node bench/yjs-big-update.mjs <server url, e.g. ws://127.0.0.1:8787/yjs> <doc> <mib>
// (bench/setup.sh installs its packages)
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const [server, room, mib] = process.argv.slice(2)
const doc = new Y.Doc()
doc.getText('text').insert(0, 'x'.repeat(Number(mib) * 1024 * 1024))
const started = performance.now()
const provider = new WebsocketProvider(server, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
provider.on('sync', (synced) => {
  if (!synced) return
  // A second client fetching the document back proves the server has it.
  const other = new Y.Doc()
  const reader = new WebsocketProvider(server, room, other, { WebSocketPolyfill: WebSocket, disableBc: true })
  other.on('update', () => {
    if (other.getText('text').length !== doc.getText('text').length) return
    console.log(JSON.stringify({ mib: Number(mib), ms: Math.round(performance.now() - started) }))
    process.exit(0)
  })
})
