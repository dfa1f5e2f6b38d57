// The HTTP contract (docs/api.md) and the token lifecycle, in one place.
//
// The access token lives in this module's memory only: never in localStorage, sessionStorage, a
// cookie we can read, or a URL. The refresh token is the server's HttpOnly cookie, scoped to
// /api/v1/auth; every page load and every near-expiry gets a new access token through it.
// Refreshes are serialised across tabs with the Web Locks API, and the tab that refreshed hands
// the new access token to the others over a BroadcastChannel, so several tabs cause one refresh.

const API = "/api/v1";
const LOCK_NAME = "latchkey-refresh";
const CHANNEL_NAME = "latchkey-auth";
// Not a secret: only tells the sign-in page that trying the cookie is worth a request.
const HINT_KEY = "latchkey.signed-in";
const FLASH_KEY = "latchkey.flash";
// Refresh this long before expiry (or a fifth of the lifetime, when that is shorter).
const REFRESH_LEAD_MS = 60_000;
// After a failed background refresh (network, 503), try again this soon.
const RETRY_MS = 15_000;
// How long the refreshing tab keeps the lock after telling the others about the new token.
const HANDOFF_MS = 150;
// How many refreshes the tabs of this browser have made: a counter, never a token. A tab that
// finds it moved while it waited for the lock knows another tab's token is on its way to it.
const REFRESH_COUNT_KEY = "latchkey.refreshes";
// How long such a tab waits for that token before it refreshes after all.
const TOKEN_WAIT_MS = 3000;

/** An answer from the API that was not a success: `code` is the problem's machine code. */
export class ApiError extends Error {
  constructor(status, problem, headers) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem || {};
    this.code = this.problem.code || (status === 0 ? "network" : "unknown");
    this.errors = this.problem.errors || {};
    const retry = Number.parseInt(headers?.get("retry-after") ?? "", 10);
    this.retryAfter = Number.isFinite(retry) && retry >= 0 ? retry : null;
    this.requestId = headers?.get("x-request-id") || null;
  }
}

/** Thrown after the session ended and the page is on its way to the sign-in page. */
export class SessionEnded extends Error {
  constructor() {
    super("session ended");
    this.name = "SessionEnded";
  }
}

/** One request to the API. Resolves with the JSON body (null for 204), rejects with ApiError. */
export async function request(method, path, { body, token } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
    });
  } catch {
    throw new ApiError(0, null, null);
  }
  let data = null;
  if (response.status !== 204 && (response.headers.get("content-type") || "").includes("json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data, response.headers);
  return data;
}

// ---- the signed-in state of this tab --------------------------------------------------------

let current = null; // { token, expiresAt, user, receivedAt }
let timer = 0;
let inflight = null;
const tokenWaiters = new Set();
const sessionEndListeners = new Set();
const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(CHANNEL_NAME) : null;

function storage(kind) {
  try {
    return kind === "local" ? window.localStorage : window.sessionStorage;
  } catch {
    return null; // storage disabled: hints and flash messages are a nicety, not a need
  }
}

function setHint(on) {
  const store = storage("local");
  if (!store) return;
  if (on) store.setItem(HINT_KEY, "1");
  else store.removeItem(HINT_KEY);
}

export function probablySignedIn() {
  return storage("local")?.getItem(HINT_KEY) === "1";
}

/** A message for the next page this tab shows (it survives one navigation). */
export function setFlash(text, kind = "info") {
  storage("session")?.setItem(FLASH_KEY, JSON.stringify({ text, kind }));
}

export function takeFlash() {
  const store = storage("session");
  const raw = store?.getItem(FLASH_KEY);
  if (!raw) return null;
  store.removeItem(FLASH_KEY);
  try {
    const flash = JSON.parse(raw);
    return typeof flash?.text === "string" ? flash : null;
  } catch {
    return null;
  }
}

function adopt(grant, receivedAt = Date.now()) {
  // The refresh token in the body is deliberately dropped: the cookie carries it.
  current = {
    token: grant.access_token,
    expiresAt: receivedAt + grant.expires_in * 1000,
    user: grant.user,
    receivedAt,
  };
  setHint(true);
  schedule();
  for (const arrived of tokenWaiters) arrived();
  tokenWaiters.clear();
}

function refreshCount() {
  return Number(storage("local")?.getItem(REFRESH_COUNT_KEY) || 0);
}

function countRefresh() {
  storage("local")?.setItem(REFRESH_COUNT_KEY, String(refreshCount() + 1));
}

function tokenFromAnotherTab(ms) {
  return new Promise((arrived) => {
    tokenWaiters.add(arrived);
    setTimeout(arrived, ms);
  });
}

function leadFor(state) {
  const lifetime = state.expiresAt - state.receivedAt;
  return Math.min(REFRESH_LEAD_MS, lifetime / 5);
}

function isFresh(state) {
  return Boolean(state) && state.expiresAt - Date.now() > leadFor(state);
}

function schedule(delay) {
  clearTimeout(timer);
  if (!current) return;
  const due = delay ?? Math.max(1000, current.expiresAt - leadFor(current) - Date.now());
  timer = setTimeout(backgroundRefresh, due);
}

async function backgroundRefresh() {
  try {
    await refresh();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      endSession("Your session has ended. Please sign in again.");
    } else if (current) {
      schedule(RETRY_MS); // the network or the server had a moment; the token may still be good
    }
  }
}

// Timers are throttled in background tabs and stop while a laptop sleeps: catch up on return.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && current && !isFresh(current)) {
    backgroundRefresh();
  }
});

channel?.addEventListener("message", (event) => {
  const message = event.data || {};
  if (message.type === "token" && message.grant) {
    // The sign-in and sign-up pages hold no token and want none.
    if (!current && sessionEndListeners.size === 0) return;
    const grant = message.grant;
    const known = current?.user?.id;
    if (known && grant.user?.id !== known) {
      // Another tab signed in as someone else: this page shows the wrong person now.
      window.location.reload();
      return;
    }
    // Sent the moment it arrived, so its lifetime starts now here too (give or take a few ms).
    if (!current || Date.now() + grant.expires_in * 1000 > current.expiresAt) adopt(grant);
  } else if (message.type === "signed-out" && sessionEndListeners.size > 0) {
    // Only pages that show a signed-in person react; the sign-in pages have nothing to leave.
    endSession(message.reason || "You were signed out in another tab.", message.kind || "info", false);
  }
});

function broadcast(message) {
  try {
    channel?.postMessage(message);
  } catch {
    // a closed channel during unload: nothing to tell
  }
}

function forget() {
  current = null;
  clearTimeout(timer);
  setHint(false);
}

/**
 * A new access token through the refresh cookie. Concurrent calls in this tab share one request;
 * other tabs wait for the lock, and then use the token this tab broadcast instead of refreshing.
 */
export function refresh() {
  if (!inflight) {
    inflight = new Promise((resolve, reject) => {
      const asked = Date.now();
      const countWhenAsked = refreshCount();
      const tookAnotherTabsToken = () => current && current.receivedAt >= asked && isFresh(current);
      const run = async () => {
        try {
          if (tookAnotherTabsToken()) {
            resolve(current); // another tab refreshed while this one waited for the lock
            return;
          }
          if (refreshCount() !== countWhenAsked) {
            // Another tab refreshed after this one asked, and its token has not arrived yet (a
            // busy machine delays the channel): wait for it rather than refresh a second time.
            await tokenFromAnotherTab(TOKEN_WAIT_MS);
            if (tookAnotherTabsToken()) {
              resolve(current);
              return;
            }
          }
          const grant = await request("POST", "/auth/refresh");
          countRefresh();
          adopt(grant);
          broadcast({ type: "token", grant: withoutRefreshToken(grant) });
          resolve(current);
          // Hold the lock a moment longer, so that the other tabs have the new token before any
          // of them may decide it needs to refresh.
          await new Promise((done) => setTimeout(done, HANDOFF_MS));
        } catch (error) {
          reject(error);
        }
      };
      if (navigator.locks?.request) navigator.locks.request(LOCK_NAME, run).catch(reject);
      else run();
    }).finally(() => {
      inflight = null;
    });
  }
  return inflight;
}

function withoutRefreshToken(grant) {
  const { refresh_token: _dropped, ...rest } = grant;
  return rest;
}

/** On page load: the signed-in user, or null when the cookie does not open a session. */
export async function resume() {
  try {
    const state = await refresh();
    return state.user;
  } catch (error) {
    // 403 forbidden_origin is not "signed out": signing in again would not help, so it is
    // reported to the person instead.
    if (error instanceof ApiError && error.status === 401) {
      forget();
      return null;
    }
    throw error;
  }
}

export function currentUser() {
  return current?.user ?? null;
}

export async function signIn(email, password) {
  const grant = await request("POST", "/auth/login", { body: { email, password } });
  adopt(grant);
  return grant.user;
}

/**
 * Creates an account. Returns the user, signed in; or null when the service wants the address
 * verified first (202 "verification_sent": a link was mailed, no session yet).
 */
export async function signUp(email, password) {
  const grant = await request("POST", "/auth/register", { body: { email, password } });
  if (!grant?.access_token) return null;
  adopt(grant);
  return grant.user;
}

/** Mails a new verification link (the answer is the same whether or not the account exists). */
export async function resendVerification(email) {
  await request("POST", "/auth/verify-email/resend", { body: { email } });
}

export async function verifyEmail(token) {
  await request("POST", "/auth/verify-email", { body: { token } });
}

/** Mails a reset link when the account exists (the answer is the same either way). */
export async function requestPasswordReset(email) {
  await request("POST", "/auth/password-reset", { body: { email } });
}

export async function confirmPasswordReset(token, newPassword) {
  await request("POST", "/auth/password-reset/confirm", { body: { token, new_password: newPassword } });
}

/**
 * The token of a mailed link (`#token=...`), taken out of the address bar at once, so it stays
 * out of the history, bookmarks and anything that reads the address later.
 */
export function takeLinkToken() {
  const match = /^#token=([A-Za-z0-9_-]{1,128})$/.exec(window.location.hash);
  if (window.location.hash) {
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return match ? match[1] : null;
}

/**
 * A request as the signed-in user. A 401 gets one refresh and one retry (the token may just have
 * expired, say after a sleep); when that fails too the session is over and the page goes to the
 * sign-in page with a message.
 */
export async function authed(method, path, body) {
  try {
    if (!isFresh(current)) await refresh();
    const used = current.token;
    try {
      return await request(method, path, { body, token: used });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) throw error;
    }
    // Another call or tab may have refreshed meanwhile; only refresh when nobody has.
    if (!current || current.token === used) await refresh();
    return await request(method, path, { body, token: current.token });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      endSession("Your session has ended. Please sign in again.");
      throw new SessionEnded();
    }
    throw error;
  }
}

/** Ends this device's session on the server, then here and in the other tabs. */
export async function signOut() {
  await request("POST", "/auth/logout", { token: current?.token });
  forget();
  broadcast({ type: "signed-out", reason: "You signed out in another tab.", kind: "info" });
}

/** After the account is gone or the session ended by another means. */
export function signedOutLocally(reason) {
  forget();
  broadcast({ type: "signed-out", reason, kind: "info" });
}

export function onSessionEnd(listener) {
  sessionEndListeners.add(listener);
}

let leaving = false;

/**
 * Forget the token and go to the sign-in page with `message`. Other tabs are told, unless this
 * tab is reacting to their message (`tellOthers` false), so the news does not bounce back.
 */
export function endSession(message, kind = "error", tellOthers = true) {
  if (leaving) return;
  leaving = true;
  const wasSignedIn = current !== null;
  forget();
  if (wasSignedIn && tellOthers) {
    broadcast({ type: "signed-out", reason: "Your session has ended. Please sign in again.", kind: "error" });
  }
  for (const listener of sessionEndListeners) listener(message);
  setFlash(message, kind);
  window.location.assign("/");
}

/** The page is going elsewhere on purpose (signed out, account deleted): ignore tab news. */
export function leave(url, flash, kind = "info") {
  leaving = true;
  if (flash) setFlash(flash, kind);
  window.location.assign(url);
}
