"""What a person does on the site, in the words of the page: labels, button names, messages."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

ACCOUNT_URL = re.compile(r"/account/$")
SIGN_IN_URL = re.compile(r"/$")


def unique_email(prefix: str = "person") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def strong_password() -> str:
    # Unrelated words plus a random tail: zxcvbn scores this 4.
    return f"orbit Kettle saffron {uuid.uuid4().hex[:6]} lantern"


def sign_up(page: Page, email: str, password: str) -> None:
    page.goto("/signup/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Create account").click()
    expect_account(page, email)


def sign_in(page: Page, email: str, password: str, navigate: bool = True) -> None:
    if navigate:
        page.goto("/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect_account(page, email)


def expect_account(page: Page, email: str) -> None:
    expect(page).to_have_url(ACCOUNT_URL)
    expect(page.locator("#profile-email")).to_have_text(email)
    expect(page.get_by_role("navigation", name="Account")).to_contain_text(email)


def expect_sign_in_page(page: Page, message: str | re.Pattern | None = None) -> None:
    expect(page).to_have_url(SIGN_IN_URL)
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    if message is not None:
        expect(page.locator("#flash")).to_contain_text(message)


def sessions(page: Page):
    return page.locator("#sessions > li[data-session-id]")


def reload_sessions(page: Page) -> None:
    page.get_by_role("button", name="Refresh the list of sessions").click()
    expect(page.locator("#sessions-loading")).to_be_hidden()
