"""The whole life of an account, as one person with two devices lives it."""

from __future__ import annotations

import contextlib

from playwright.sync_api import expect

from pages import (
    SIGN_IN_URL,
    expect_account,
    expect_sign_in_page,
    reload_sessions,
    sessions,
    sign_in,
    sign_up,
    strong_password,
    unique_email,
)


@contextlib.contextmanager
def step(name: str):
    """Names the step of the journey in the failure, so a report says where it stopped."""
    try:
        yield
    except Exception as error:
        raise AssertionError(f"journey step failed: {name}\n{error}") from error


def test_an_account_from_sign_up_through_two_devices_to_deletion(browsers):
    email = unique_email("journey")
    password = strong_password()
    laptop = browsers.page()
    phone = browsers.page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)

    with step("sign up shows the account page with the email"):
        sign_up(laptop, email, password)

    with step("a reload keeps you signed in"):
        laptop.reload()
        expect_account(laptop, email)

    with step("sign out returns to the sign-in page"):
        laptop.get_by_role("button", name="Sign out", exact=True).click()
        expect_sign_in_page(laptop, "You are signed out.")

    with step("a wrong password shows the error next to the password"):
        laptop.get_by_label("Email").fill(email)
        laptop.get_by_label("Password", exact=True).fill(password + "x")
        laptop.get_by_role("button", name="Sign in").click()
        expect(laptop.locator("#password-error")).to_have_text("The email or password is incorrect.")
        expect(laptop.get_by_label("Password", exact=True)).to_have_attribute("aria-invalid", "true")

    with step("sign in"):
        sign_in(laptop, email, password, navigate=False)

    with step("a second device signs in too"):
        sign_in(phone, email, password)

    with step("the first device sees two sessions, this one marked"):
        reload_sessions(laptop)
        expect(sessions(laptop)).to_have_count(2)
        expect(sessions(laptop).filter(has_text="This device")).to_have_count(1)

    with step("the first device signs the other one out"):
        other = laptop.locator('#sessions > li[data-current="false"]')
        other.get_by_role("button", name="Sign out").click()
        expect(laptop.locator("#sessions-notice")).to_contain_text("Signed out")
        expect(sessions(laptop)).to_have_count(1)

    with step("the other device is sent to sign in on its next action"):
        phone.get_by_role("button", name="Refresh the list of sessions").click()
        expect_sign_in_page(phone, "Your session has ended. Please sign in again.")

    new_password = strong_password()
    with step("change password"):
        laptop.get_by_label("Current password").fill(password)
        laptop.get_by_label("New password").fill(new_password)
        laptop.get_by_role("button", name="Change password").click()
        expect(laptop.locator("#password-form-notice")).to_contain_text("Password changed")
        expect(laptop.get_by_label("Current password")).to_have_value("")

    with step("the old password no longer signs in, the new one does"):
        phone.get_by_label("Email").fill(email)
        phone.get_by_label("Password", exact=True).fill(password)
        phone.get_by_role("button", name="Sign in").click()
        expect(phone.locator("#password-error")).to_have_text("The email or password is incorrect.")
        sign_in(phone, email, new_password, navigate=False)

    with step("delete account asks for the password and then deletes it"):
        laptop.get_by_role("button", name="Delete account…").click()
        dialog = laptop.get_by_role("dialog", name="Delete your account?")
        expect(dialog).to_be_visible()
        dialog.get_by_label("Password").fill("not my password at all")
        dialog.get_by_role("button", name="Delete my account").click()
        expect(dialog.locator("#delete-password-error")).to_have_text("That password is not correct.")
        dialog.get_by_label("Password").fill(new_password)
        dialog.get_by_role("button", name="Delete my account").click()
        expect_sign_in_page(laptop, "Your account has been deleted.")

    with step("the deleted account's other device is signed out too"):
        phone.get_by_role("button", name="Refresh the security activity").click()
        expect_sign_in_page(phone)

    with step("the deleted account no longer signs in"):
        laptop.get_by_label("Email").fill(email)
        laptop.get_by_label("Password", exact=True).fill(new_password)
        laptop.get_by_role("button", name="Sign in").click()
        expect(laptop.locator("#password-error")).to_have_text("The email or password is incorrect.")
        expect(laptop).to_have_url(SIGN_IN_URL)

    with step("the email can register again"):
        sign_up(laptop, email, strong_password())
