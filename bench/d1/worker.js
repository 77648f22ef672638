// bench/sql.sh's peer: the same point read and single-row insert as the
// spike plugin (tests/fixtures/store-bench) and native-sql, as a Worker
// with a D1 binding, run locally by workerd through miniflare (serve.mjs).
const TEXT = '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
const ROWS = 1000;
const json = (status, body) => new Response(body, { status, headers: { 'content-type': 'application/json' } });

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    const read = pathname.match(/^\/store\/sql\/(\d+)$/);
    if (read && request.method === 'GET') {
      const row = await env.DB.prepare('SELECT id, text FROM items WHERE id = ?').bind(Number(read[1])).first();
      return row ? json(200, `{"id":${row.id},"text":"${row.text}"}`) : json(404, '{}');
    }
    if (pathname === '/store/sql' && request.method === 'POST') {
      const done = await env.DB.prepare('INSERT INTO items (text) VALUES (?)').bind(TEXT).run();
      return json(201, String(done.meta.last_row_id));
    }
    if (pathname === '/store/seed' && request.method === 'POST') {
      await env.DB.exec('CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, text TEXT NOT NULL)');
      const insert = env.DB.prepare('INSERT OR REPLACE INTO items (id, text) VALUES (?, ?)');
      for (let first = 1; first <= ROWS; first += 100) {
        const batch = [];
        for (let n = first; n < first + 100; n++) batch.push(insert.bind(n, TEXT));
        await env.DB.batch(batch);
      }
      return json(200, String(ROWS));
    }
    return json(404, '{}');
  },
};
