"""Email verification and password reset in the browser, through nginx, with a real SMTP server:
the tests open the links the service mailed. The new pages and states are captured and checked
by axe at both widths and in both colour schemes, like the others (test_screenshots.py)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

import a11y
from harness import call, start_stack, stop_stack
from mailbox import Mailbox
from pages import expect_account, sign_up, strong_password, unique_email
from test_screenshots import WIDTHS, expect_scheme, shoot


def open_link(page, link: str) -> None:
    """Opens a mailed link as a click in a mail program would: a new load of the page (from the
    same page, a change of fragment alone would not load it again)."""
    page.goto("about:blank")
    page.goto(link)


@pytest.fixture(scope="module")
def mailbox():
    box = Mailbox()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def stack(mailbox):
    started = start_stack("email", {"SMTP_URL": mailbox.url, "AUTH_EMAIL_VERIFICATION": "optional"})
    yield started
    stop_stack(started)


def test_forgot_password_then_the_mailed_link_sets_a_new_password_and_signs_in(browsers, stack, mailbox):
    email, old, new = unique_email("forgot"), strong_password(), strong_password()
    first = browsers.page()
    sign_up(first, email, old)

    page = browsers.page()
    page.goto("/")
    page.get_by_role("link", name="Forgot password?").click()
    expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    page.locator("#request-form").get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    link = mailbox.link(email, "reset")
    open_link(page, link)
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    # The token left the address bar (and so the history) as soon as the page read it.
    expect(page).to_have_url(re.compile(r"/reset/$"))
    page.locator("#confirm-form").get_by_label("Email").fill(email)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_role("button", name="Set new password").click()
    expect_account(page, email)

    assert call(stack.base_url, "POST", "/api/v1/auth/login", {"email": email, "password": old}).status == 401
    # The first browser's session ended with the reset; the link works once.
    assert call(
        stack.base_url, "POST", "/api/v1/auth/password-reset/confirm", {"token": link.split("#token=")[1], "new_password": new}
    ).status == 400
    # The first browser's refresh cookie was ended by the reset: asked from its own page (a fetch,
    # not a reload: the account page's redirect to sign-in during a navigation left Playwright
    # waiting with no timeout, 1 run in 3 here).
    status = first.evaluate(
        "fetch('/api/v1/auth/refresh', {method: 'POST', credentials: 'same-origin'}).then(r => r.status)"
    )
    assert status == 401


def test_sign_up_then_verify_from_the_mail_and_the_banner_is_gone(browsers, mailbox):
    email = unique_email("verify")
    page = browsers.page()
    sign_up(page, email, strong_password())
    banner = page.locator("#verify-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("not verified")

    open_link(page, mailbox.link(email, "verify"))
    expect(page.locator("#verify-result")).to_contain_text("verified")
    expect(page).to_have_url(re.compile(r"/verify/$"))
    page.get_by_role("link", name="Continue to your account").click()
    expect_account(page, email)
    expect(banner).to_be_hidden()


def test_the_banners_resend_button_mails_a_second_link_says_so_and_that_link_verifies(browsers, mailbox):
    email = unique_email("resend")
    page = browsers.page()
    sign_up(page, email, strong_password())
    banner = page.locator("#verify-banner")
    expect(banner).to_be_visible()
    mailbox.wait_for(email, 1)

    banner.get_by_role("button", name="Send a new link").click()
    # The page says so in the banner and in the status region that screen readers announce.
    expect(banner).to_contain_text(f"A new link is on its way to {email}")
    expect(page.get_by_role("status")).to_have_text("A new verification link was sent.")
    mails = mailbox.wait_for(email, 2)
    assert len(mails) == 2, mails
    first, second = mailbox.link(email, "verify", 1), mailbox.link(email, "verify", 2)
    assert first != second
    a11y.check(page, "account-verification-resent")

    open_link(page, second)
    expect(page.locator("#verify-result")).to_contain_text("verified")
    expect(page).to_have_url(re.compile(r"/verify/$"))
    page.get_by_role("link", name="Continue to your account").click()
    expect_account(page, email)
    expect(banner).to_be_hidden()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(WIDTHS))
def test_the_email_pages_fit_pass_axe_and_are_captured(browsers, mailbox, width, scheme):
    page = browsers.page(color_scheme=scheme, **WIDTHS[width])
    tag = f"{width}-{scheme}"
    email = unique_email(f"mail-{width}-{scheme}")

    sign_up(page, email, strong_password())
    expect(page.locator("#verify-banner")).to_be_visible()
    expect_scheme(page, scheme)
    shoot(page, f"account-unverified-{tag}")
    verify_link = mailbox.link(email, "verify")

    open_link(page, "/verify/#token=" + "A" * 43)
    expect(page.get_by_role("button", name="Send a new link")).to_be_visible()
    shoot(page, f"verify-invalid-link-{tag}")
    open_link(page, verify_link)
    expect(page.get_by_role("link", name="Continue to your account")).to_be_visible()
    shoot(page, f"verify-done-{tag}")

    page.goto("/reset/")
    expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    shoot(page, f"reset-request-{tag}")
    page.locator("#request-form").get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    shoot(page, f"reset-sent-{tag}")

    open_link(page, mailbox.link(email, "reset"))
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    page.locator("#confirm-form").get_by_label("Email").fill(email)
    page.get_by_label("New password", exact=True).fill("password1")
    page.get_by_role("button", name="Set new password").click()
    expect(page.locator("#new_password-error")).to_be_visible()
    shoot(page, f"reset-weak-password-{tag}")

    open_link(page, "/reset/#token=" + "A" * 43)
    page.locator("#confirm-form").get_by_label("Email").fill(email)
    page.get_by_label("New password", exact=True).fill(strong_password())
    page.get_by_role("button", name="Set new password").click()
    expect(page.locator("#request-error")).to_contain_text("does not work any more")
    shoot(page, f"reset-invalid-link-{tag}")
