// A LiveStore peer for the end-to-end tests: an unmodified LiveStore client
// (@livestore/adapter-node, in-memory, syncing with makeWsSync from
// @livestore/sync-cf 0.4) with a small todo schema, driven by JSON lines
// on stdin, answering with JSON lines on stdout.
//
//   node livestore-peer.mjs <sync url, e.g. ws://127.0.0.1:8787/livestore> <storeId> [authToken]
//
// Commands: {"op":"add","id":"t1","text":"milk"} (commits todoCreated),
// {"op":"dump"} -> {"todos":[{id,text}] sorted by id},
// {"op":"wait","count":N} -> {"todos":[...]} once N todos are there,
// {"op":"quit"}. Events: {"event":"ready"} once the store is up,
// {"event":"error","message"} if it fails.
import * as readline from 'node:readline'
import WebSocket from 'ws'
import { makeAdapter } from '@livestore/adapter-node'
import { createStorePromise, Events, makeSchema, Schema, State } from '@livestore/livestore'
import { makeWsSync } from '@livestore/sync-cf/client'

// Node 20 has no global WebSocket; the client uses the global one.
globalThis.WebSocket ??= WebSocket
// Stdout is for answers: the client's logs go to stderr, its debug and
// info lines only with LIVESTORE_PEER_LOG=1.
const toStderr = (...parts) => process.stderr.write(parts.map(String).join(' ') + '\n')
const quiet = () => {}
console.log = console.info = console.debug = process.env.LIVESTORE_PEER_LOG ? toStderr : quiet
console.warn = console.error = toStderr

const [url, storeId, authToken] = process.argv.slice(2)
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n')

const tables = {
  todos: State.SQLite.table({
    name: 'todos',
    columns: {
      id: State.SQLite.text({ primaryKey: true }),
      text: State.SQLite.text({ default: '' }),
    },
  }),
}
const events = {
  todoCreated: Events.synced({
    name: 'v1.TodoCreated',
    schema: Schema.Struct({ id: Schema.String, text: Schema.String }),
  }),
}
const materializers = State.SQLite.materializers(events, {
  'v1.TodoCreated': ({ id, text }) => tables.todos.insert({ id, text }),
})
const schema = makeSchema({ events, state: State.SQLite.makeState({ tables, materializers }) })

const todos = () =>
  store
    .query(tables.todos)
    .map(({ id, text }) => ({ id, text }))
    .sort((a, b) => (a.id < b.id ? -1 : 1))

let store
try {
  const adapter = makeAdapter({
    storage: { type: 'in-memory' },
    sync: { backend: makeWsSync({ url }) },
  })
  store = await createStorePromise({
    adapter,
    schema,
    storeId,
    ...(authToken ? { syncPayload: { authToken } } : {}),
  })
  say({ event: 'ready' })
} catch (e) {
  say({ event: 'error', message: String(e) })
  process.exit(1)
}

const waiting = []
store.subscribe(tables.todos, () => {
  const now = todos()
  for (const w of waiting.splice(0)) {
    if (now.length >= w) say({ todos: now })
    else waiting.push(w)
  }
})

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const command = JSON.parse(line)
  switch (command.op) {
    case 'add':
      store.commit(events.todoCreated({ id: command.id, text: command.text }))
      break
    case 'dump':
      say({ todos: todos() })
      break
    case 'wait':
      if (todos().length >= command.count) say({ todos: todos() })
      else waiting.push(command.count)
      break
    case 'quit':
      store.shutdownPromise().finally(() => process.exit(0))
  }
})
lines.on('close', () => process.exit(0))
