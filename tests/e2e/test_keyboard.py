"""Keyboard only: no clicks, no pointer. Every step presses keys and checks where focus is."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from harness import call
from pages import expect_account, expect_sign_in_page, strong_password, unique_email


def tab_to(page: Page, role: str, name: str, limit: int = 40) -> None:
    """Presses Tab until the element is focused, as a person would; fails after `limit` presses."""
    target = page.get_by_role(role, name=name, exact=True)
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"{role} {name!r} not reached with {limit} presses of Tab")


def focus_is_visible(page: Page) -> bool:
    return page.evaluate(
        """() => {
          const style = getComputedStyle(document.activeElement);
          return style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
        }"""
    )


def test_keyboard_only_sign_in_use_and_sign_out(browsers, stack):
    email, password = unique_email("keys"), strong_password()
    created = call(stack.base_url, "POST", "/api/v1/auth/register", {"email": email, "password": password}, source_ip="127.0.0.10")
    assert created.status == 201
    page = browsers.page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # The first Tab reaches the skip link; Enter moves to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Email")).to_be_focused()
    assert focus_is_visible(page)
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password", exact=True)).to_be_focused()
    page.keyboard.type(password)
    # The show/hide button is a real button, reachable and usable with the keyboard.
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Show password")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Password", exact=True)).to_have_attribute("type", "text")
    expect(page.get_by_role("button", name="Hide password")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect_account(page, email)

    # The delete dialog opens, traps focus, and Escape closes it back onto its button.
    tab_to(page, "button", "Delete account…")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Delete your account?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Password")).to_be_focused()
    for _ in range(4):
        page.keyboard.press("Tab")
        assert page.evaluate("document.querySelector('dialog').contains(document.activeElement)") or page.evaluate(
            "document.activeElement === document.body"
        ), "focus left the open dialog"
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Delete account…")).to_be_focused()

    # Sign out from the header.
    page.keyboard.press("Control+Home")
    page.locator("body").evaluate("b => b.focus()")
    tab_to(page, "button", "Sign out")
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect_sign_in_page(page, "You are signed out.")
