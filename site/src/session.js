// Who the user is: a token from the development issuer (POST
// /api/dev-token), kept in localStorage and sent as the `__session` cookie,
// which the auth plugin reads on every request and WebSocket upgrade of
// this origin (SameSite=Strict: never on another site's requests).

const KEY = 'spike.session';

/** The signed-in user `{ token, name, sub }`, or null. */
export function current() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? 'null');
    if (s && s.token && s.expiresAt > Date.now()) return s;
  } catch {
    // A broken entry is no session.
  }
  return null;
}

function setCookie(token) {
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = token
    ? `__session=${token}; Path=/; SameSite=Strict${secure}`
    : `__session=; Path=/; Max-Age=0; SameSite=Strict${secure}`;
}

/** Re-sends a stored session's cookie (a new tab, an expired cookie). */
export function restore() {
  const s = current();
  setCookie(s ? s.token : '');
  if (!s) localStorage.removeItem(KEY);
  return s;
}

/** Asks the development issuer for a token for `name`. */
export async function signIn(name) {
  const resp = await fetch('/api/dev-token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    throw new Error(body?.error?.message ?? `the token issuer answered ${resp.status}`);
  }
  const session = {
    token: body.token,
    name: body.name,
    sub: body.sub,
    expiresAt: body.expires_at_ms,
  };
  localStorage.setItem(KEY, JSON.stringify(session));
  setCookie(session.token);
  return session;
}

export function signOut() {
  localStorage.removeItem(KEY);
  setCookie('');
}
