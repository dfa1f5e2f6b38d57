"""`make run` serves the same site from api-container (STATIC_DIR), without nginx: it works there
too, under the policy the pages carry in their own <meta> element."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from harness import call
from pages import expect_account, expect_sign_in_page, reload_sessions, sessions, sign_in, sign_up, strong_password, unique_email

BEHIND_NGINX = False


def test_the_site_works_when_api_container_serves_it(browsers, stack):
    assert call(stack.base_url, "GET", "/").header("Server") is None, "this is api-container, not nginx"
    email, password = unique_email("run"), strong_password()
    page = browsers.page()
    sign_up(page, email, password)
    page.reload()
    expect_account(page, email)
    reload_sessions(page)
    expect(sessions(page)).to_have_count(1)
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect_sign_in_page(page, "You are signed out.")
    sign_in(page, email, password, navigate=False)
    page.goto("/signup")
    expect(page.get_by_role("heading", name="Create an account")).to_be_visible()


def test_the_meta_policy_still_refuses_inline_script(browsers):
    page = browsers.page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    ran = page.evaluate(
        """() => {
          try {
            const s = document.createElement("script");
            s.textContent = "window.__inline = 1";
            document.body.append(s);
          } catch (e) { /* Trusted Types refused the text */ }
          return window.__inline === 1;
        }"""
    )
    assert ran is False
    page.wait_for_timeout(200)
    assert browsers.take_problems(), "the refusal is reported"


def test_opened_from_another_address_the_page_says_why_instead_of_looping(browsers, stack):
    # AUTH_ISSUER names 127.0.0.1; "localhost" is another origin, whose cookie requests are refused.
    other_origin = stack.base_url.replace("127.0.0.1", "localhost")
    page = browsers.page()
    page.goto(f"{other_origin}/signup/")
    page.get_by_label("Email").fill(unique_email("origin"))
    page.get_by_label("Password", exact=True).fill(strong_password())
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{other_origin}/account/")
    expect(page.locator("#flash")).to_have_text(
        "This page is not allowed to use your sign-in. Open Latchkey from its own address."
    )
    expect(page.locator("#account")).to_be_hidden()


def test_an_unknown_page_gets_the_sites_404_page_and_an_unknown_api_path_problem_json(browsers, stack):
    # As nginx does (test_security.py): the site's own 404.html, with status 404, for a browser path.
    missing = call(stack.base_url, "GET", "/no-such-page", headers={"Accept": "text/html"})
    assert missing.status == 404
    assert (missing.header("Content-Type") or "").startswith("text/html")
    assert b"<title>Page not found" in missing.body
    page = browsers.page()
    answer = page.goto("/no-such-page")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    # Under /api/ it stays the API's problem+json, whatever the client accepts.
    for accept in ("text/html", "application/json"):
        api = call(stack.base_url, "GET", "/api/v1/nope", headers={"Accept": accept})
        assert api.status == 404
        assert api.header("Content-Type") == "application/problem+json"
        assert api.json()["code"] == "not_found"
