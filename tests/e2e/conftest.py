"""Fixtures: one Chromium for the session, one stack (database, api-container, nginx) per test
module, and browser contexts per test that watch every page for console errors (CSP violations
among them) and uncaught exceptions: any of them fails the test."""

from __future__ import annotations

import os
import re
import shutil
import signal
import urllib.parse
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from harness import REPO, Stack, start_stack, stop_stack

ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS") or REPO / "artifacts" / "e2e")
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 800}

# Reports CSP and Trusted Types violations as console errors the test can see. Added through the
# DevTools protocol, so the page's own policy does not apply to it.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error("[csp-violation] " + JSON.stringify({
    directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile,
    line: e.lineNumber, sample: e.sample, disposition: e.disposition,
  }));
});
"""
PROBLEM = re.compile(r"\[csp-violation\]|Content Security Policy|Trusted Type|Refused to|Permissions-Policy", re.I)
# Chromium's own note, as a console error, for every response with a 4xx or 5xx status.
NETWORK_NOTE = re.compile(r"^Failed to load resource: the server responded with a status of (\d{3})\b")


def pytest_configure(config):
    # scripts/test-e2e.sh passes Ctrl-C and kill on as SIGTERM: stop like Ctrl-C, so the
    # fixtures stop nginx and api-container and drop their databases.
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.exit(f"{CHROMIUM} not found: install Debian's chromium (scripts/test-e2e.sh does)", returncode=2)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def stack(request) -> Stack:
    name = request.module.__name__.removeprefix("test_")
    started = start_stack(
        name, getattr(request.module, "BACKEND_ENV", None), nginx=getattr(request.module, "BEHIND_NGINX", True)
    )
    yield started
    stop_stack(started)
    logs = ARTIFACTS / "logs" / name
    logs.mkdir(parents=True, exist_ok=True)
    for log in started.logs:
        if log.exists():
            shutil.copy(log, logs / log.name)


class Browsers:
    """Opens contexts (one per simulated device) against the stack's nginx."""

    def __init__(self, browser: Browser, stack: Stack):
        self.browser = browser
        self.stack = stack
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []
        self._watched: set[int] = set()
        # Pages that answered 404 to a navigation: the site's "Page not found", opened on purpose.
        self._missing_pages: set[str] = set()
        # Chromium's notes about error statuses, judged at the end (see `_expected`).
        self._notes: list[tuple[str, str, int]] = []

    def context(self, **options) -> BrowserContext:
        options.setdefault("viewport", DESKTOP)
        context = self.browser.new_context(base_url=self.stack.base_url, **options)
        context.set_default_timeout(10_000)
        context.add_init_script(script=CSP_LISTENER)
        context.on("page", self.watch)
        self.contexts.append(context)
        return context

    def page(self, **options) -> Page:
        page = self.context(**options).new_page()
        self.watch(page)
        return page

    def watch(self, page: Page) -> None:
        if id(page) in self._watched:
            return
        self._watched.add(id(page))
        page.on("console", lambda message: self._console(page, message))
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: uncaught {error}"))
        page.on("response", self._response)

    def _response(self, response) -> None:
        if response.status == 404 and response.request.resource_type == "document":
            self._missing_pages.add(response.url)

    def _console(self, page: Page, message) -> None:
        # Every console error counts: a script's console.error, a policy violation, a resource
        # that failed (a missing stylesheet, a 500); warnings only when they are about the policies.
        if message.type == "error" or (message.type == "warning" and PROBLEM.search(message.text)):
            source = message.location.get("url", "")
            note = NETWORK_NOTE.match(message.text)
            if note:
                self._notes.append((f"{page.url}: [console.{message.type}] {message.text} ({source})", source, int(note[1])))
            else:
                self.problems.append(f"{page.url}: [console.{message.type}] {message.text} ({source})")

    def _expected(self, source: str, status: int) -> bool:
        """The two error statuses that are answers, not faults: the API's 4xx problem+json, which
        the page turns into words (wrong password, weak password, session ended; the tests check
        the words), and the site's 404 page for a path that does not exist. A 5xx, or a 4xx for a
        page asset or anything else, is a fault."""
        path = urllib.parse.urlsplit(source).path
        if path.startswith("/api/") and 400 <= status < 500:
            return True
        return status == 404 and source in self._missing_pages

    def take_problems(self) -> list[str]:
        notes, self._notes = self._notes, []
        self.problems += [text for text, source, status in notes if not self._expected(source, status)]
        taken, self.problems = self.problems, []
        return taken


@pytest.fixture
def browsers(browser, stack, request) -> Browsers:
    opened = Browsers(browser, stack)
    yield opened
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        folder = ARTIFACTS / "failures"
        folder.mkdir(parents=True, exist_ok=True)
        for c, context in enumerate(opened.contexts):
            for p, page in enumerate(context.pages):
                try:
                    page.screenshot(path=folder / f"{request.node.name}-{c}-{p}.png", full_page=True)
                except Exception:  # a closed or crashed page has nothing to show
                    pass
    for context in opened.contexts:
        context.close()
    problems = opened.take_problems()
    if problems:
        pytest.fail("pages reported console errors, CSP violations or uncaught exceptions:\n" + "\n".join(problems))
