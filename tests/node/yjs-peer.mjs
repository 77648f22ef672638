// A Yjs peer for the end-to-end tests: an unmodified `y-websocket` client
// (with `ws` as its WebSocket, as Node 20 needs) editing the shared text
// "text" of one document, driven by JSON lines on stdin, answering with
// JSON lines on stdout.
//
//   node yjs-peer.mjs <server url, e.g. ws://127.0.0.1:8787/yjs> <document>
//
// Commands: {"op":"insert","at":0,"text":"hi"}, {"op":"delete","at":0,"len":2},
// {"op":"presence","state":{...}} (this peer's awareness state),
// {"op":"dump"} -> {"text","synced","peers":[awareness states others set]},
// {"op":"quit"}. Events: {"event":"synced"} once the first sync is done,
// {"event":"status","status"} on connection changes.
import * as readline from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const [server, room] = process.argv.slice(2)
const doc = new Y.Doc()
const text = doc.getText('text')
const provider = new WebsocketProvider(server, room, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
})
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n')

provider.on('sync', (synced) => {
  if (synced) say({ event: 'synced' })
})
provider.on('status', ({ status }) => say({ event: 'status', status }))

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const command = JSON.parse(line)
  switch (command.op) {
    case 'insert':
      text.insert(command.at, command.text)
      break
    case 'delete':
      text.delete(command.at, command.len)
      break
    case 'presence':
      provider.awareness.setLocalState(command.state)
      break
    case 'dump': {
      const peers = []
      provider.awareness.getStates().forEach((state, client) => {
        // A client that set nothing shows as {}: not a peer to report.
        if (client !== doc.clientID && Object.keys(state).length > 0) peers.push(state)
      })
      say({ text: text.toString(), synced: provider.synced, peers })
      break
    }
    case 'quit':
      provider.destroy()
      process.exit(0)
  }
})
lines.on('close', () => {
  provider.destroy()
  process.exit(0)
})
