// Who the user is: a token from the development issuer (POST
// /api/dev-token), which the server sets as the `__session` cookie,
// HttpOnly (no script of this page can read it, so none that runs here can
// take the session) and SameSite=Strict (never sent on another site's
// requests). The auth plugin reads it on every request and WebSocket
// upgrade of this origin. The page keeps only who is signed in, and until
// when, to show it; never the token.

const KEY = 'spike.session';

/** The signed-in user `{ name, sub, expiresAt }`, or null. */
export function current() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? 'null');
    if (s && s.sub && s.expiresAt > Date.now() && !('token' in s)) return s;
  } catch {
    // A broken entry is no session.
  }
  return null;
}

/** The stored session, if it is still good; forgets any other (an
 * expired one, or one an earlier version kept with its token). */
export function restore() {
  const s = current();
  if (!s) localStorage.removeItem(KEY);
  return s;
}

/** Asks the development issuer for a session for `name` (the answer sets
 * the cookie). */
export async function signIn(name) {
  const resp = await fetch('/api/dev-token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
    credentials: 'same-origin',
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    throw new Error(body?.error?.message ?? `the token issuer answered ${resp.status}`);
  }
  const session = { name: body.name, sub: body.sub, expiresAt: body.expires_at_ms };
  localStorage.setItem(KEY, JSON.stringify(session));
  return session;
}

/** Signs out: the server clears the cookie. */
export async function signOut() {
  localStorage.removeItem(KEY);
  await fetch('/api/dev-token', { method: 'DELETE', credentials: 'same-origin' }).catch(() => {});
}
