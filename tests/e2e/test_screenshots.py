"""Every page and state a person reaches, at phone and desktop widths, light and dark: saved as
screenshots, checked by axe (a11y.py), and none of them scrolls sideways. The colour scheme is
asserted too, not only photographed: the site follows `prefers-color-scheme`."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

import a11y
from conftest import ARTIFACTS
from harness import call
from pages import reload_sessions, sign_in, sign_up, strong_password, unique_email

WIDTHS = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}


def shoot(page, name: str, full_page: bool = True) -> None:
    """Saves the screenshot, fails on sideways scrolling, and runs axe on the same state."""
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"{name}.png", full_page=full_page)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than the window"
    a11y.check(page, name)


def expect_scheme(page, scheme: str) -> None:
    """The page is drawn in the scheme asked for: dark text on a light page or the reverse."""
    colours = page.evaluate(
        """() => {
          const style = getComputedStyle(document.body);
          return { matches: matchMedia("(prefers-color-scheme: dark)").matches,
                   background: style.backgroundColor, text: style.color };
        }"""
    )
    background, text = a11y.luminance(colours["background"]), a11y.luminance(colours["text"])
    assert colours["matches"] is (scheme == "dark"), colours
    if scheme == "dark":
        assert background < 0.05 and text > 0.7, colours
    else:
        assert background > 0.85 and text < 0.05, colours


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(WIDTHS))
def test_each_page_fits_passes_axe_and_is_captured(browsers, stack, width, scheme):
    page = browsers.page(color_scheme=scheme, **WIDTHS[width])
    email = unique_email(f"shot-{width}-{scheme}")
    password = strong_password()
    tag = f"{width}-{scheme}"

    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect_scheme(page, scheme)
    a11y.expect_field_edges(page)
    shoot(page, f"sign-in-{tag}")

    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#email-error")).to_be_visible()
    a11y.expect_field_edges(page)
    shoot(page, f"sign-in-errors-{tag}")

    page.goto("/signup/")
    expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
    shoot(page, f"sign-up-{tag}")

    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("password1")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#password-error")).to_be_visible()
    shoot(page, f"sign-up-weak-password-{tag}")

    sign_up(page, email, password)
    # A second session and some history make the page look lived in; a failed sign-in shows the
    # warning badge ("Check this") too.
    failed = call(stack.base_url, "POST", "/api/v1/auth/login", {"email": email, "password": "not the password"})
    assert failed.status == 401
    other = browsers.page()
    sign_in(other, email, password)
    reload_sessions(page)
    page.get_by_role("button", name="Refresh the security activity").click()
    expect(page.locator("#events > li[data-event]").first).to_be_visible()
    expect(page.locator("#sessions .badge")).to_have_text("This device")
    expect(page.locator("#events .badge.warn")).to_have_text("Check this")
    expect_scheme(page, scheme)
    a11y.expect_field_edges(page)
    shoot(page, f"account-{tag}")

    page.get_by_role("button", name="Sign out everywhere else").click()
    others = page.get_by_role("dialog", name="Sign out everywhere else?")
    expect(others).to_be_visible()
    expect(others).to_contain_text("1 other session")
    shoot(page, f"account-sign-out-others-dialog-{tag}", full_page=False)
    others.get_by_role("button", name="Cancel").click()
    expect(others).to_be_hidden()

    page.get_by_role("button", name="Delete account…").click()
    dialog = page.get_by_role("dialog", name="Delete your account?")
    expect(dialog).to_be_visible()
    shoot(page, f"account-delete-dialog-{tag}", full_page=False)
    dialog.get_by_role("button", name="Delete my account").click()
    expect(dialog.locator("#delete-password-error")).to_be_visible()
    a11y.expect_field_edges(page)
    shoot(page, f"account-delete-dialog-error-{tag}", full_page=False)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    page.goto("/no-such-page")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect_scheme(page, scheme)
    shoot(page, f"not-found-{tag}")
