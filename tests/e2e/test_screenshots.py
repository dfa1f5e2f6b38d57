"""Every page at phone and desktop widths, light and dark, saved as artifacts; and none of them
scrolls sideways."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conftest import ARTIFACTS
from pages import reload_sessions, sign_in, sign_up, strong_password, unique_email

WIDTHS = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}


def shoot(page, name: str, full_page: bool = True) -> None:
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"{name}.png", full_page=full_page)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than the window"


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(WIDTHS))
def test_each_page_fits_and_is_captured(browsers, width, scheme):
    page = browsers.page(color_scheme=scheme, **WIDTHS[width])
    email = unique_email(f"shot-{width}-{scheme}")
    password = strong_password()
    tag = f"{width}-{scheme}"

    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shoot(page, f"sign-in-{tag}")

    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#email-error")).to_be_visible()
    shoot(page, f"sign-in-errors-{tag}")

    page.goto("/signup/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("password1")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#password-error")).to_be_visible()
    shoot(page, f"sign-up-weak-password-{tag}")

    sign_up(page, email, password)
    # A second session and some history make the page look lived in.
    other = browsers.page()
    sign_in(other, email, password)
    reload_sessions(page)
    page.get_by_role("button", name="Refresh the security activity").click()
    expect(page.locator("#events > li[data-event]").first).to_be_visible()
    shoot(page, f"account-{tag}")

    page.get_by_role("button", name="Delete account…").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    shoot(page, f"account-delete-dialog-{tag}", full_page=False)

    page.goto("/no-such-page")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    shoot(page, f"not-found-{tag}")
