// Saved copies of documents in the signed-in user's space of the CMS
// (`/my-cms/editor/<name>.tsx`; the `__session` cookie says who).

const path = (name) => `/my-cms/editor/${encodeURIComponent(name)}.tsx`;

async function failure(resp, what) {
  const body = await resp.json().catch(() => null);
  return new Error(`${what}: ${body?.error?.message ?? resp.status}`);
}

/** Saves `text` as document `name`; its new version. */
export async function save(name, text) {
  const resp = await fetch(path(name), {
    method: 'PUT',
    headers: { 'content-type': 'text/tsx; charset=utf-8' },
    body: text,
  });
  if (!resp.ok) throw await failure(resp, 'saving');
  return (await resp.json()).version;
}

/** The saved copy `{ text, version }`, or null if there is none. */
export async function load(name) {
  const resp = await fetch(path(name), { cache: 'no-store' });
  if (resp.status === 404) return null;
  if (!resp.ok) throw await failure(resp, 'loading');
  return { text: await resp.text(), version: Number(resp.headers.get('x-cms-version')) };
}
