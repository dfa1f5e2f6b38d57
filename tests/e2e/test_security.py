"""The page's security: CSP enforced and never violated, modules only, tokens kept out of storage
and URLs; and the edge's: headers, compression, caching, body limit, rate limit, forwarding."""

from __future__ import annotations

import gzip
import re
from html.parser import HTMLParser
from pathlib import Path

from playwright.sync_api import expect

from harness import FRONTEND, call
from pages import reload_sessions, sign_in, sign_up, strong_password, unique_email

PAGES = ["/", "/signup/", "/account/", "/verify/", "/reset/"]
HTML_FILES = sorted((FRONTEND / "public").rglob("*.html"))


def csp_directives(value: str) -> dict[str, list[str]]:
    directives = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


class Inline(HTMLParser):
    """Collects anything a strict CSP would refuse: inline scripts and styles, handlers."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.scripts: list[dict] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in attributes:
            if name.startswith("on") or name == "style":
                self.found.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.found.append("<style>")
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "a" and (attributes.get("href") or "").lower().startswith("javascript:"):
            self.found.append("javascript: link")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"inline script: {data.strip()[:40]}")


def test_the_html_has_module_scripts_only_and_nothing_inline():
    assert HTML_FILES, "no pages found"
    for path in HTML_FILES:
        parser = Inline()
        parser.feed(path.read_text())
        assert parser.found == [], f"{path.name}: {parser.found}"
        for script in parser.scripts:
            assert script.get("type") == "module" and script.get("src", "").startswith("/assets/js/"), f"{path.name}: {script}"
    # No third-party assets: every reference in the site is to the site itself.
    for path in (FRONTEND / "public").rglob("*"):
        if path.suffix in {".html", ".css", ".js"}:
            text = path.read_text()
            assert not re.search(r"""(?:src|href|url\(|from)\s*=?\s*["']?(?:https?:)?//""", text), f"{path.name} refers elsewhere"


def test_every_page_gets_a_strict_policy_and_the_other_security_headers(stack):
    for path in [*PAGES, "/assets/app.css", "/assets/js/api.js", "/no-such-page", "/api/v1/me", "/.well-known/jwks.json"]:
        reply = call(stack.base_url, "GET", path)
        csp = reply.header("Content-Security-Policy")
        assert csp, path
        directives = csp_directives(csp)
        assert directives["default-src"] == ["'none'"]
        assert directives["script-src"] == ["'self'"]
        assert directives["style-src"] == ["'self'"]
        assert directives["frame-ancestors"] == ["'none'"]
        assert directives["base-uri"] == ["'none'"]
        assert directives["require-trusted-types-for"] == ["'script'"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert reply.headers.get_all("X-Content-Type-Options") == ["nosniff"], path
        assert reply.header("Referrer-Policy") == "no-referrer"
        assert "camera=()" in reply.header("Permissions-Policy")
        assert reply.header("X-Frame-Options") == "DENY"
        assert reply.header("Server") == "nginx", "server_tokens off hides the version"


def test_the_policy_is_enforced_and_a_violation_is_reported(browsers):
    page = browsers.page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    outcome = page.evaluate(
        """() => {
          const results = {};
          try {
            const s = document.createElement("script");
            s.textContent = "window.__inline = 1";
            document.body.append(s);
            results.script = "appended";
          } catch (e) { results.script = e.name; }
          try { document.body.innerHTML += "<b>x</b>"; results.html = "assigned"; } catch (e) { results.html = e.name; }
          results.ran = window.__inline === 1;
          return results;
        }"""
    )
    assert outcome["ran"] is False
    assert outcome["html"] == "TypeError", "Trusted Types refuses a string as HTML"
    page.wait_for_timeout(200)
    problems = browsers.take_problems()
    assert any("require-trusted-types-for" in p or "Trusted Type" in p for p in problems), problems


def test_a_full_session_reports_no_violation_and_no_script_error(browsers):
    email, password = unique_email("csp"), strong_password()
    page = browsers.page()
    sign_up(page, email, password)
    reload_sessions(page)
    page.get_by_role("button", name="Refresh the security activity").click()
    page.get_by_role("button", name="Show password").first.click()
    page.get_by_role("button", name="Delete account…").click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Sign out", exact=True).click()
    sign_in(page, email, password, navigate=False)
    for path in ["/signup/", "/", "/no-such-page"]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
    # The live DOM, after every script ran, has no inline style or script either.
    page.goto("/account/")
    expect(page.locator("#sessions > li").first).to_be_visible()
    assert page.locator("[style], script:not([src]), style").count() == 0
    assert browsers.take_problems() == []


def test_any_console_error_is_a_problem_but_an_api_answer_is_not(browsers):
    # The fixture fails a test on what take_problems() returns at its end.
    page = browsers.page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.evaluate("() => console.error('something broke')")
    page.wait_for_timeout(100)
    assert [p for p in browsers.take_problems() if "something broke" in p]

    # A missing asset is a fault, even with the status nginx uses for a missing page.
    page.evaluate("() => fetch('/assets/no-such-file.js')")
    page.wait_for_timeout(200)
    assert [p for p in browsers.take_problems() if "404" in p]

    # A 401 from the API is an answer the page puts into words; opening a missing page on purpose
    # shows the site's 404 page. Neither is a problem.
    page.get_by_label("Email").fill(unique_email("console"))
    page.get_by_label("Password", exact=True).fill(strong_password())
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#password-error")).to_have_text("The email or password is incorrect.")
    page.goto("/no-such-page")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    assert browsers.take_problems() == []


def test_tokens_never_reach_storage_urls_or_script_readable_cookies(browsers):
    page = browsers.page()
    seen: set[str] = set()
    urls: list[str] = []

    def collect(request):
        urls.append(request.url)
        authorization = request.headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            seen.add(authorization.removeprefix("Bearer "))

    def refresh_cookie() -> dict:
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "refresh_token"]
        seen.add(cookie["value"])
        return cookie

    page.on("request", collect)
    sign_up(page, unique_email("store"), strong_password())
    expect(page.locator("#events > li[data-event]").first).to_be_visible()
    refresh_cookie()
    page.reload()
    expect(page.locator("#events > li[data-event]").first).to_be_visible()
    cookie = refresh_cookie()
    assert len(seen) >= 4, "two access tokens in use and two refresh cookies"

    stored = page.evaluate(
        """() => JSON.stringify([
          Object.entries(localStorage), Object.entries(sessionStorage), document.cookie,
          location.href, window.name,
        ])"""
    )
    for token in seen:
        assert token not in stored
        assert all(token not in url for url in urls)
    assert "refresh_token" not in page.evaluate("document.cookie")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/api/v1/auth"


def test_static_files_are_compressed_and_cached_and_api_answers_are_not_compressed(stack):
    css = call(stack.base_url, "GET", "/assets/app.css", headers={"Accept-Encoding": "gzip"})
    assert css.status == 200
    assert css.header("Content-Encoding") == "gzip"
    assert "Accept-Encoding" in (css.header("Vary") or "")
    assert b":root" in gzip.decompress(css.body)
    assert css.header("Cache-Control") == "max-age=600"
    assert css.header("ETag")
    again = call(stack.base_url, "GET", "/assets/app.css", headers={"If-None-Match": css.header("ETag")})
    assert again.status == 304

    js = call(stack.base_url, "GET", "/assets/js/api.js", headers={"Accept-Encoding": "gzip"})
    assert js.header("Content-Encoding") == "gzip"
    assert "javascript" in js.header("Content-Type")

    page = call(stack.base_url, "GET", "/signup/", headers={"Accept-Encoding": "gzip"})
    assert page.header("Cache-Control") == "no-cache"
    assert page.header("Content-Type") == "text/html; charset=utf-8"

    token = call(
        stack.base_url,
        "POST",
        "/api/v1/auth/register",
        {"email": unique_email("gzip"), "password": strong_password()},
        headers={"Accept-Encoding": "gzip"},
        source_ip="127.0.0.6",
    )
    assert token.status == 201
    assert token.header("Content-Encoding") is None, "no compression next to secrets (BREACH)"
    assert token.header("Cache-Control") == "no-store"


def test_the_edge_routes_only_the_site_the_api_and_well_known(stack):
    moved = call(stack.base_url, "GET", "/account")
    assert moved.status == 301 and moved.header("Location") == "/account/"
    missing = call(stack.base_url, "GET", "/no-such-page")
    assert missing.status == 404 and b"Page not found" in missing.body
    jwks = call(stack.base_url, "GET", "/.well-known/jwks.json")
    assert jwks.status == 200 and jwks.json()["keys"]
    assert jwks.header("Cache-Control") == "public, max-age=300"
    assert call(stack.base_url, "GET", "/api/v1/openapi.json").status == 200
    for private in ["/metrics", "/readyz"]:
        assert call(stack.base_url, "GET", private).status == 404, f"{private} must stay on the private network"
    assert call(stack.base_url, "GET", "/healthz").body == b"ok\n"
    assert call(stack.base_url, "GET", "/api/v1/no-such-route").json()["code"] == "not_found"


def test_request_ids_pass_through_and_are_made_when_missing(stack):
    mine = call(stack.base_url, "GET", "/api/v1/me", headers={"X-Request-Id": "e2e-request-42"})
    assert mine.status == 401 and mine.header("X-Request-Id") == "e2e-request-42"
    made = call(stack.base_url, "GET", "/api/v1/me")
    assert re.fullmatch(r"[0-9a-zA-Z-]{16,}", made.header("X-Request-Id") or "")


def test_bodies_over_16_kib_are_refused_at_the_edge_as_problem_json(stack):
    body = b'{"email": "' + b"a" * (17 * 1024) + b'"}'
    reply = call(stack.base_url, "POST", "/api/v1/auth/login", raw=body, headers={"Content-Type": "application/json"}, source_ip="127.0.0.7")
    assert reply.status == 413
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.json()["code"] == "payload_too_large"
    assert reply.header("X-Content-Type-Options") == "nosniff"


def test_the_edge_rate_limits_auth_requests_per_address_with_problem_json(stack):
    statuses = []
    limited = None
    for _ in range(60):
        reply = call(stack.base_url, "POST", "/api/v1/auth/login", {}, source_ip="127.0.0.8")
        statuses.append(reply.status)
        if reply.status == 429:
            limited = reply
            break
    assert limited is not None, f"no 429 in {statuses}"
    assert statuses.count(400) >= 20, "the burst passes first"
    assert limited.header("Content-Type") == "application/problem+json"
    assert limited.json()["code"] == "too_many_requests"
    assert limited.header("Retry-After") == "1"
    # Another address is not affected, and pages are never limited.
    assert call(stack.base_url, "POST", "/api/v1/auth/login", {}, source_ip="127.0.0.9").status == 400
    assert call(stack.base_url, "GET", "/", source_ip="127.0.0.8").status == 200


def test_the_back_end_sees_the_client_address_through_x_forwarded_for(stack):
    email, password = unique_email("xff"), strong_password()
    grant = call(stack.base_url, "POST", "/api/v1/auth/register", {"email": email, "password": password}, source_ip="127.0.0.2")
    assert grant.status == 201
    auth = {"Authorization": f"Bearer {grant.json()['access_token']}"}
    listed = call(stack.base_url, "GET", "/api/v1/sessions", headers=auth, source_ip="127.0.0.2")
    assert listed.status == 200, listed.body
    assert [s["ip"] for s in listed.json()["sessions"]] == ["127.0.0.2"]
    events = call(stack.base_url, "GET", "/api/v1/me/events", headers=auth, source_ip="127.0.0.2").json()["events"]
    assert events[0]["ip"] == "127.0.0.2"


def test_the_front_end_files_are_readable_by_anyone():
    # nginx's workers are unprivileged; a file only its owner can read would be a 403 in production.
    for path in (FRONTEND / "public").rglob("*"):
        assert path.stat().st_mode & 0o004, f"{path} is not world-readable"
        if path.is_dir():
            assert path.stat().st_mode & 0o001, f"{path} is not world-searchable"


def test_the_nginx_template_names_only_its_three_variables():
    template = (FRONTEND / "nginx.conf").read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", template))
    assert placeholders == {"LATCHKEY_BACKEND", "LATCHKEY_LISTEN", "LATCHKEY_ROOT"}
    dockerfile = (FRONTEND / "Dockerfile").read_text()
    for name in placeholders:
        assert name in dockerfile, f"the image does not set {name}"
    assert "NGINX_ENVSUBST_FILTER" in dockerfile
    assert Path(FRONTEND / "public" / "index.html").exists()
