"""How the forms behave: errors in words next to their field, busy buttons, redirects and
messages when the session is not (or no longer) there."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from harness import call
from pages import (
    expect_account,
    expect_sign_in_page,
    reload_sessions,
    sessions,
    sign_in,
    sign_up,
    strong_password,
    unique_email,
)

# Two free failures, so the per-email back-off is reached in a few attempts.
BACKEND_ENV = {"AUTH_LOGIN_FREE_FAILURES": "2"}


def register(stack, email: str, password: str) -> dict:
    reply = call(stack.base_url, "POST", "/api/v1/auth/register", {"email": email, "password": password}, source_ip="127.0.0.5")
    assert reply.status == 201, reply.body
    return reply.json()


def test_a_weak_password_shows_zxcvbn_reasons_next_to_the_field(browsers):
    page = browsers.page()
    page.goto("/signup/")
    page.get_by_label("Email").fill(unique_email("weak"))
    page.get_by_label("Password", exact=True).fill("password1")
    with page.expect_response("**/api/v1/auth/register") as answer:
        page.get_by_role("button", name="Create account").click()
    problem = answer.value.json()
    assert answer.value.status == 422 and problem["code"] == "validation_failed"
    reasons = problem["errors"]["password"]
    assert reasons, problem

    field = page.get_by_label("Password", exact=True)
    errors = page.locator("#password-error")
    expect(errors.locator("li")).to_have_text(reasons)
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_attribute("aria-describedby", re.compile(r"\bpassword-error\b"))
    expect(field).to_be_focused()
    # The field's accessible description carries the reasons, so a screen reader reads them.
    expect(field).to_have_accessible_description(re.compile(re.escape(reasons[0])))
    expect(page.locator("#email-error")).to_be_hidden()
    expect(page).to_have_url(re.compile(r"/signup/$"))


def test_an_invalid_email_and_a_taken_email_are_explained_at_the_email_field(browsers, stack):
    email = unique_email("taken")
    register(stack, email, strong_password())
    page = browsers.page()
    page.goto("/signup/")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("Password", exact=True).fill(strong_password())
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#email-error")).to_contain_text("Enter an email address like name@example.com.")

    page.get_by_label("Email").fill(email.upper())
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#email-error")).to_contain_text("An account with this email already exists.")
    expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")
    page.locator("#email-error").get_by_role("link", name="Sign in instead").click()
    expect_sign_in_page(page)


def test_empty_fields_are_explained_without_asking_the_server(browsers):
    page = browsers.page()
    page.goto("/")
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#email-error")).to_have_text("Enter your email address.")
    expect(page.locator("#password-error")).to_have_text("Enter your password.")
    expect(page.get_by_label("Email")).to_be_focused()
    expect(page.locator("#status")).to_have_text("Please correct the highlighted fields.")
    assert asked == []


def test_the_button_is_disabled_while_the_request_runs(browsers, stack):
    email, password = unique_email("busy"), strong_password()
    register(stack, email, password)
    page = browsers.page()
    page.goto("/")
    held = []
    page.route("**/api/v1/auth/login", lambda route: held.append(route))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    busy = page.get_by_role("button", name="Signing in…")
    expect(busy).to_be_disabled()
    expect(page.locator("#signin-form")).to_have_attribute("aria-busy", "true")
    # A second press (or Enter) while it runs sends nothing more.
    page.get_by_label("Password", exact=True).press("Enter")
    page.wait_for_timeout(200)
    assert len(held) == 1
    held[0].continue_()
    expect_account(page, email)


def test_the_per_email_back_off_is_shown_in_words(browsers, stack):
    email, password = unique_email("backoff"), strong_password()
    register(stack, email, password)
    page = browsers.page()
    page.goto("/")
    page.get_by_label("Email").fill(email)
    for _ in range(2):
        page.get_by_label("Password", exact=True).fill("wrong password here")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#password-error")).to_have_text("The email or password is incorrect.")
        expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#form-error")).to_have_text(re.compile(r"^Too many attempts\. Try again in \d+ seconds?\.$"))
    expect(page).to_have_url(re.compile(r"/$"))


def test_the_account_page_without_a_session_sends_you_to_sign_in(browsers):
    page = browsers.page()
    page.goto("/account/")
    expect_sign_in_page(page, "Please sign in to see your account.")


def test_a_signed_in_person_opening_the_sign_in_page_goes_to_the_account(browsers):
    email, password = unique_email("back"), strong_password()
    page = browsers.page()
    sign_up(page, email, password)
    page.goto("/")
    expect_account(page, email)


def test_a_session_revoked_elsewhere_sends_you_to_sign_in_with_a_message(browsers, stack):
    email, password = unique_email("revoked"), strong_password()
    page = browsers.page()
    sign_up(page, email, password)
    # Elsewhere (another device, through the API): sign in, then end every other session.
    other = call(stack.base_url, "POST", "/api/v1/auth/login", {"email": email, "password": password}, source_ip="127.0.0.5")
    token = other.json()["access_token"]
    ended = call(stack.base_url, "DELETE", "/api/v1/sessions", headers={"Authorization": f"Bearer {token}"}, source_ip="127.0.0.5")
    assert ended.status == 204
    page.get_by_role("button", name="Change password").click()  # client-side check only: no request
    page.get_by_role("button", name="Refresh the security activity").click()
    expect_sign_in_page(page, "Your session has ended. Please sign in again.")
    expect(page.locator("#flash")).to_have_class(re.compile(r"\berror\b"))


def test_signing_out_in_one_tab_signs_out_the_others(browsers):
    email, password = unique_email("tabs"), strong_password()
    first = browsers.page()
    sign_up(first, email, password)
    second = first.context.new_page()
    browsers.watch(second)
    second.goto("/account/")
    expect_account(second, email)
    first.get_by_role("button", name="Sign out", exact=True).click()
    expect_sign_in_page(first, "You are signed out.")
    expect_sign_in_page(second, "You signed out in another tab.")
    # And the cookie is gone: signing in is needed again.
    second.goto("/account/")
    expect_sign_in_page(second, "Please sign in to see your account.")
    sign_in(second, email, password)


def test_sign_out_everywhere_else_leaves_only_this_device(browsers):
    email, password = unique_email("others"), strong_password()
    here = browsers.page()
    sign_up(here, email, password)
    phones = [browsers.page() for _ in range(2)]
    for phone in phones:
        sign_in(phone, email, password)
    reload_sessions(here)
    expect(sessions(here)).to_have_count(3)
    # It asks first; Cancel (or Escape) changes nothing.
    here.get_by_role("button", name="Sign out everywhere else").click()
    confirm = here.get_by_role("dialog", name="Sign out everywhere else?")
    expect(confirm).to_contain_text("This signs out 2 other sessions")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    here.get_by_role("button", name="Sign out everywhere else").click()
    here.keyboard.press("Escape")
    expect(confirm).to_be_hidden()
    reload_sessions(here)
    expect(sessions(here)).to_have_count(3)
    here.get_by_role("button", name="Sign out everywhere else").click()
    confirm.get_by_role("button", name="Sign out the others").click()
    expect(confirm).to_be_hidden()
    expect(here.locator("#sessions-notice")).to_have_text("Signed out everywhere else. Only this device is signed in now.")
    expect(sessions(here)).to_have_count(1)
    expect(sessions(here).first).to_contain_text("This device")
    expect(here.get_by_role("button", name="Sign out everywhere else")).to_be_disabled()
    for phone in phones:
        phone.reload()
        expect_sign_in_page(phone, "Please sign in to see your account.")


def test_a_weak_new_password_is_explained_next_to_the_new_password(browsers):
    email, password = unique_email("change"), strong_password()
    page = browsers.page()
    sign_up(page, email, password)
    page.get_by_label("Current password").fill("not the password")
    page.get_by_label("New password").fill(strong_password())
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#current_password-error")).to_have_text("Your current password is not correct.")
    page.get_by_label("Current password").fill(password)
    page.get_by_label("New password").fill("password1")
    with page.expect_response("**/api/v1/me/password") as answer:
        page.get_by_role("button", name="Change password").click()
    reasons = answer.value.json()["errors"]["new_password"]
    expect(page.locator("#new_password-error li")).to_have_text(reasons)
    expect(page.locator("#current_password-error")).to_be_hidden()
    expect(page.get_by_label("New password")).to_be_focused()
