"""The page never holds a refresh token (issue 13, item 5). A browser's requests carry Origin, so
the service answers register, login and refresh with the refresh token in the HttpOnly cookie
only: no response the page reads has one in its body, and nothing script on the page can reach
(document.cookie, storage, globals, the app's own module, a fetch of its own) holds one. The
front-end keeps working, since it never needed the body's copy."""

from __future__ import annotations

import base64
import json
from collections import Counter

from playwright.sync_api import expect

from pages import expect_account, expect_sign_in_page, reload_sessions, sessions, sign_in, sign_up, strong_password, unique_email
from test_tokens import RefreshWatch, wait_until

# Every value a page script can see that is not a built-in of the window: the globals the app's
# scripts added (compared with a same-origin page that runs none), the app's module exports,
# storage, cookies, the URL, window.name and history.state, as one string of everything found.
SCRIPT_REACH = """async (builtins) => {
  const found = [];
  const keys = [];
  const seen = new WeakSet();
  const walk = (value, depth) => {
    if (value === null || value === undefined) return;
    if (typeof value === "string") { found.push(value); return; }
    if (typeof value !== "object" && typeof value !== "function") { found.push(String(value)); return; }
    if (depth > 6 || seen.has(value) || value instanceof Node) return;
    seen.add(value);
    let names = [];
    try { names = Object.getOwnPropertyNames(value); } catch { return; }
    for (const name of names) {
      keys.push(name);
      let inner;
      try { inner = value[name]; } catch { continue; }
      walk(inner, depth + 1);
    }
    if (value instanceof Map) for (const [k, v] of value) { walk(k, depth + 1); walk(v, depth + 1); }
    if (value instanceof Set) for (const v of value) walk(v, depth + 1);
  };
  const globals = Object.getOwnPropertyNames(window).filter((name) => !builtins.includes(name));
  for (const name of globals) walk(window[name], 0);
  const api = await import("/assets/js/api.js");
  for (const name of Object.keys(api)) walk(typeof api[name] === "function" ? null : api[name], 0);
  walk(api.currentUser(), 0);
  for (const store of [localStorage, sessionStorage]) {
    for (let i = 0; i < store.length; i++) { keys.push(store.key(i)); found.push(store.getItem(store.key(i))); }
  }
  found.push(document.cookie, location.href, window.name, JSON.stringify(history.state));
  return { globals, keys, text: found.join("\\n") };
}"""


class ApiResponses:
    """Every /api/ response a page reads, with its body. Playwright's `response` events list them,
    but a body read that way is gone once the page navigates (sign-up and sign-in navigate as soon
    as they have their answer), so the bodies are taken through the DevTools protocol: each /api/
    response is held at the response stage, read, and passed on unchanged. The browser made the
    request itself (its Origin, its cookies), and the page gets exactly what the server sent."""

    def __init__(self, page):
        self.seen: list[dict] = []  # from the response events
        self.bodies: list[dict] = []  # from the DevTools protocol, in the same order per request
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.on("Fetch.requestPaused", self._paused)
        self.cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*/api/*", "requestStage": "Response"}]})
        page.on("response", self._response)

    def _paused(self, event) -> None:
        request_id = event["requestId"]
        try:
            status = event.get("responseStatusCode")
            text = ""
            if status not in (None, 204, 301, 302, 303, 307, 308):
                body = self.cdp.send("Fetch.getResponseBody", {"requestId": request_id})
                raw = body["body"]
                text = base64.b64decode(raw).decode() if body["base64Encoded"] else raw
            headers = {h["name"].lower(): h["value"] for h in event.get("responseHeaders", [])}
            self.bodies.append(
                {
                    "method": event["request"]["method"],
                    "path": event["request"]["url"].split("/api/", 1)[1],
                    "status": status,
                    "origin": next((v for k, v in event["request"]["headers"].items() if k.lower() == "origin"), None),
                    "text": text,
                    "json": json.loads(text) if text and "json" in headers.get("content-type", "") else None,
                }
            )
        finally:
            self.cdp.send("Fetch.continueResponse", {"requestId": request_id})

    def _response(self, response) -> None:
        if "/api/" in response.url:
            self.seen.append({"method": response.request.method, "path": response.url.split("/api/", 1)[1], "status": response.status})

    def grants(self) -> list[dict]:
        return [e for e in self.bodies if e["path"].startswith("v1/auth/") and e["status"] in (200, 201)]

    def check_complete(self) -> None:
        """Each response the page got had its body read. Only that way round: Playwright may drop
        the `response` event of a request whose page navigates as its answer arrives (sign-up
        does), while the DevTools protocol held and read that response all the same."""

        def key(entry: dict) -> tuple:
            return entry["method"], entry["path"], entry["status"]

        unread = Counter(map(key, self.seen)) - Counter(map(key, self.bodies))
        assert not unread, (unread, self.seen, self.bodies)


def keys_in(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


def test_the_page_never_holds_a_refresh_token(browsers, stack):
    email, password = unique_email("no-refresh"), strong_password()
    context = browsers.context()
    context.clock.install()
    watch = RefreshWatch(context)
    page = context.new_page()
    browsers.watch(page)
    responses = ApiResponses(page)
    cookies: set[str] = set()

    def take_cookie() -> dict:
        (cookie,) = [c for c in context.cookies() if c["name"] == "refresh_token"]
        assert cookie["httpOnly"] is True
        cookies.add(cookie["value"])
        return cookie

    # The globals a same-origin page has without any of the app's scripts: the site's 404 page.
    page.goto("/no-such-page")
    builtins = page.evaluate("Object.getOwnPropertyNames(window)")

    sign_up(page, email, password)
    take_cookie()
    page.reload()
    expect_account(page, email)
    take_cookie()
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect_sign_in_page(page, "You are signed out.")
    sign_in(page, email, password, navigate=False)
    expect(page.locator("#events > li[data-event]").first).to_be_visible()
    take_cookie()
    # The page renews its access token a minute before it expires.
    settled = watch.count
    context.clock.fast_forward("14:10")
    wait_until(page, lambda: watch.count > settled and watch.running == 0)
    assert watch.statuses[-1] == 200
    take_cookie()
    reload_sessions(page)

    # What the page read: register, login and refresh answered with a grant, none with the
    # refresh token, and each of those requests carried the page's Origin.
    grants = responses.grants()
    assert {(g["method"], g["path"]) for g in grants} >= {
        ("POST", "v1/auth/register"),
        ("POST", "v1/auth/login"),
        ("POST", "v1/auth/refresh"),
    }, grants
    assert sum(g["path"] == "v1/auth/refresh" for g in grants) >= 2, "the reload's and the renewal's"
    for grant in grants:
        assert grant["origin"] == stack.base_url, grant
        assert grant["json"]["access_token"] and grant["json"]["user"]["email"] == email
    assert any(e["path"] == "v1/auth/logout" for e in responses.bodies)
    responses.check_complete()
    assert len(cookies) >= 4, "each sign-up, reload, sign-in and renewal set a new cookie"
    for entry in responses.bodies:
        assert "refresh_token" not in keys_in(entry["json"]), entry
        for value in cookies:
            assert value not in entry["text"], f"{entry['method']} {entry['path']} carries a refresh token"

    # What script on the page can reach, including a refresh and a login of its own.
    own = page.evaluate(
        """async ([email, password]) => {
          const post = async (path, body) => {
            const response = await fetch(path, {
              method: "POST", credentials: "same-origin",
              headers: body ? { "Content-Type": "application/json" } : {},
              body: body ? JSON.stringify(body) : undefined,
            });
            return { status: response.status, text: await response.text() };
          };
          return [
            await post("/api/v1/auth/refresh"),
            await post("/api/v1/auth/login", { email, password }),
          ];
        }""",
        [email, password],
    )
    for answer in own:
        assert answer["status"] == 200, answer
        body = json.loads(answer["text"])
        assert body["access_token"] and "refresh_token" not in keys_in(body), answer
    cookie = take_cookie()
    reach = page.evaluate(SCRIPT_REACH, builtins)
    assert "refresh_token" not in page.evaluate("document.cookie")
    assert "refresh_token" not in reach["keys"], reach["keys"]
    for value in cookies:
        assert value not in reach["text"], f"script can reach a refresh token (globals {reach['globals']})"

    # The front-end still works on the cookie alone: the script's refresh and login rotated it.
    page.reload()
    expect_account(page, email)
    reload_sessions(page)
    expect(sessions(page)).to_have_count(2)
    assert take_cookie()["value"] != cookie["value"], "the reload refreshed through the cookie"
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect_sign_in_page(page, "You are signed out.")
    assert [c for c in context.cookies() if c["name"] == "refresh_token"] == []
    responses.check_complete()
    for entry in responses.bodies:
        assert "refresh_token" not in keys_in(entry["json"]), entry
        for value in cookies:
            assert value not in entry["text"], f"{entry['method']} {entry['path']} carries a refresh token"
