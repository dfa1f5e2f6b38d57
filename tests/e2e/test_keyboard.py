"""Keyboard only: no clicks, no pointer. Every step presses keys and checks where focus is, and that
it can be seen."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

import a11y
from harness import call
from pages import expect_account, expect_sign_in_page, strong_password, unique_email

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def tab_to(page: Page, role: str, name: str | re.Pattern, limit: int = 40) -> None:
    """Presses Tab until the element is focused, as a person would; fails after `limit` presses.
    Each control passed on the way must show where focus is."""
    target = page.get_by_role(role, name=name, exact=True) if isinstance(name, str) else page.get_by_role(role, name=name)
    tab_to_element(page, target, f"{role} {name!r}", limit)


def tab_to_element(page: Page, target: Locator, name: str, limit: int = 40) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            assert focus_is_visible(page), f"{name} has no visible focus"
            return
        if page.evaluate("document.activeElement !== document.body"):
            assert focus_is_visible(page), f"{describe_focus(page)} has no visible focus"
    raise AssertionError(f"{name} not reached with {limit} presses of Tab")


def focus_is_visible(page: Page) -> bool:
    """A focus ring of at least 2px, in a colour that stands out 3:1 from the background behind the
    control (WCAG 2.2 SC 2.4.7 and 1.4.11)."""
    ring = page.evaluate(
        """() => {
          const el = document.activeElement;
          const style = getComputedStyle(el);
          let behind = "rgb(255, 255, 255)";
          for (let n = el.parentElement; n; n = n.parentElement) {
            const c = getComputedStyle(n).backgroundColor;
            if (c !== "transparent" && !/rgba\\([^)]*,\\s*0\\)$/.test(c)) { behind = c; break; }
          }
          return { style: style.outlineStyle, width: parseFloat(style.outlineWidth), colour: style.outlineColor, behind };
        }"""
    )
    return ring["style"] != "none" and ring["width"] >= 2 and a11y.contrast(ring["colour"], ring["behind"]) >= 3


def describe_focus(page: Page) -> str:
    return page.evaluate(
        "() => { const el = document.activeElement; return `${el.tagName.toLowerCase()}#${el.id} ${JSON.stringify(el.getAttribute('aria-label') || el.textContent.trim().slice(0, 40))}`; }"
    )


def tab_through(page: Page, limit: int = 60) -> list[str]:
    """Tabs from the top of the page through every control until focus comes round again; each one
    shows visible focus. Returns the accessible names met, in order."""
    page.locator("body").evaluate("b => { document.activeElement?.blur(); }")
    names: list[str] = []
    first = None
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement === document.body"):
            continue
        handle = page.evaluate_handle("document.activeElement")
        if first is not None and page.evaluate("([a, b]) => a === b", [handle, first]):
            return names
        first = first or handle
        assert focus_is_visible(page), f"{describe_focus(page)} has no visible focus"
        names.append(
            page.evaluate(
                """() => { const el = document.activeElement;
                  return el.getAttribute("aria-label") || el.labels?.[0]?.textContent.trim() || el.textContent.trim(); }"""
            )
        )
    raise AssertionError(f"focus did not come round within {limit} presses of Tab: {names}")


# The focus ring's contrast depends on the colour scheme: both are walked.
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_keyboard_only_sign_in_use_and_sign_out(browsers, stack, scheme):
    email, password = unique_email("keys"), strong_password()
    created = call(stack.base_url, "POST", "/api/v1/auth/register", {"email": email, "password": password}, source_ip="127.0.0.10")
    assert created.status == 201
    # Two other devices, so the account page has per-session and "everywhere else" buttons.
    for source in ("127.0.0.11", "127.0.0.12"):
        other = call(
            stack.base_url, "POST", "/api/v1/auth/login", {"email": email, "password": password},
            headers={"User-Agent": FIREFOX}, source_ip=source,
        )
        assert other.status == 200, other.body
    page = browsers.page(color_scheme=scheme)
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

    # Every control on the account page is reached by Tab, each with a visible focus ring.
    reached = tab_through(page)
    for name in [
        "Skip to content",
        "Latchkey",
        "Sign out",
        "Current password",
        "New password",
        "Show password",
        "Change password",
        "Refresh the list of sessions",
        "Sign out everywhere else…",
        "Refresh the security activity",
        "Delete account…",
    ]:
        assert name in reached, f"{name!r} not reached by Tab: {reached}"
    assert reached.count("Show password") == 2, reached
    others = [n for n in reached if n.startswith("Sign out Firefox on Linux")]
    assert len(others) == 2, f"one Sign out button per other session: {reached}"

    # Refresh the list: Enter runs it and focus stays on the button.
    tab_to(page, "button", "Refresh the list of sessions")
    page.keyboard.press("Enter")
    expect(page.locator("#sessions-loading")).to_be_hidden()
    expect(page.get_by_role("button", name="Refresh the list of sessions")).to_be_focused()
    sessions = page.locator("#sessions > li[data-session-id]")
    expect(sessions).to_have_count(4)  # the registration's, the two logins' and this browser's

    # One other session signed out from its own button; focus goes to the list's heading.
    tab_to(page, "button", re.compile(r"^Sign out Firefox on Linux, .*, IP 127\.0\.0\.11$"))
    page.keyboard.press("Enter")
    expect(page.locator("#sessions-notice")).to_contain_text("Signed out")
    expect(sessions).to_have_count(3)
    expect(page.get_by_role("heading", name="Where you're signed in")).to_be_focused()

    # Sign out everywhere else asks first, with focus on Cancel; Escape cancels back to the button.
    tab_to(page, "button", "Sign out everywhere else…")
    page.keyboard.press("Enter")
    confirm = page.get_by_role("dialog", name="Sign out everywhere else?")
    expect(confirm).to_be_visible()
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    assert focus_is_visible(page)
    page.keyboard.press("Escape")
    expect(confirm).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out everywhere else…")).to_be_focused()
    expect(sessions).to_have_count(3)
    # Enter on Cancel also cancels; then Shift+Tab to the action and Enter confirms.
    page.keyboard.press("Enter")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Enter")
    expect(confirm).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out everywhere else…")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Shift+Tab")
    expect(confirm.get_by_role("button", name="Sign out the others")).to_be_focused()
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(confirm).to_be_hidden()
    expect(page.locator("#sessions-notice")).to_have_text("Signed out everywhere else. Only this device is signed in now.")
    expect(sessions).to_have_count(1)
    expect(page.get_by_role("heading", name="Where you're signed in")).to_be_focused()

    # Change the password with the keyboard alone.
    new_password = strong_password()
    tab_to_element(page, page.get_by_label("Current password"), "Current password")
    page.keyboard.type(password)
    tab_to_element(page, page.get_by_label("New password"), "New password")
    page.keyboard.type(new_password)
    page.keyboard.press("Enter")
    expect(page.locator("#password-form-notice")).to_contain_text("Password changed")

    # Refresh the activity: the password change is listed.
    tab_to(page, "button", "Refresh the security activity")
    page.keyboard.press("Enter")
    expect(page.locator('#events > li[data-event="password_changed"]')).to_have_count(1)
    expect(page.get_by_role("button", name="Refresh the security activity")).to_be_focused()

    # The delete dialog opens, traps focus, and Escape closes it back onto its button.
    tab_to(page, "button", "Delete account…")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Delete your account?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Password")).to_be_focused()
    assert focus_is_visible(page)
    for _ in range(4):
        page.keyboard.press("Tab")
        assert page.evaluate("document.querySelector('#delete-dialog').contains(document.activeElement)") or page.evaluate(
            "document.activeElement === document.body"
        ), "focus left the open dialog"
        if page.evaluate("document.activeElement !== document.body"):
            assert focus_is_visible(page), describe_focus(page)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Delete account…")).to_be_focused()
    # A wrong password, submitted with Enter, is explained and focus returns to the field; Cancel
    # (reached by Tab, pressed with Enter) closes it.
    page.keyboard.press("Enter")
    expect(dialog.get_by_label("Password")).to_be_focused()
    page.keyboard.type("not my password at all")
    page.keyboard.press("Enter")
    expect(dialog.locator("#delete-password-error")).to_have_text("That password is not correct.")
    expect(dialog.get_by_label("Password")).to_be_focused()
    tab_to(page, "button", "Cancel", limit=5)
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Delete account…")).to_be_focused()

    # Sign out from the header.
    tab_to(page, "button", "Sign out")
    page.keyboard.press("Enter")
    expect_sign_in_page(page, "You are signed out.")
