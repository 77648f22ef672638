// Serves worker.js with a D1 database (kept in the folder given) on the
// port given, as `wrangler dev` does: miniflare runs it in workerd.
//
//   node serve.mjs 8799 /tmp/d1
import { Miniflare } from 'miniflare';

const [port, persist] = process.argv.slice(2);
const mf = new Miniflare({
  modules: true,
  scriptPath: new URL('./worker.js', import.meta.url).pathname,
  compatibilityDate: '2025-07-01',
  d1Databases: ['DB'],
  d1Persist: persist,
  host: '127.0.0.1',
  port: Number(port),
});
const url = await mf.ready;
console.log(`serving ${url.href}`);
