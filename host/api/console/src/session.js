// The signed-in session: the bearer token in memory, and in this tab's
// sessionStorage so a reload keeps it. sessionStorage is this origin's
// only (no other site's script reads it) and ends with the tab; the
// token never goes in a URL or a cookie.
import { createLogLine, ProblemError } from "@logline/client";

const KEY = "logline.session";
let current = load();
const listeners = new Set();

function load() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return s && typeof s.token === "string" ? s : null;
  } catch {
    return null;
  }
}

export const client = createLogLine({ baseUrl: "", token: () => current?.token });
export { ProblemError };

export function session() {
  return current;
}

export function onSession(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function set(s) {
  current = s;
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
  for (const fn of listeners) fn(s);
}

// signIn checks a pasted token (GET /api/whoami) before keeping it.
export async function signIn(token) {
  token = token.trim().replace(/^Bearer\s+/i, "");
  if (!token) throw new Error("paste a token");
  const probe = createLogLine({ baseUrl: "", token });
  const who = probe.unwrap(await probe.api.GET("/api/whoami"));
  set({ token, tenant: who.tenant, user: who.user });
}

// signInWithCode trades a one-time link's code (POST /api/signin).
export async function signInWithCode(code) {
  const r = client.unwrap(await client.api.POST("/api/signin", { body: { code } }));
  set({ token: r.token, tenant: r.tenant, user: r.user });
}

export function signOut() {
  set(null);
}

// A 401 on any call means the token expired or was revoked.
export function expired(err) {
  if (err instanceof ProblemError && err.status === 401 && current) set(null);
}
