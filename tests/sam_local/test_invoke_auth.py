"""`sam local invoke AuthFunction -e events/auth-*.json` against PostgreSQL: the answers the
in-process tests (functions/auth-lambda/tests) and scripts/test-lambda.sh expect."""

import json

import pytest

from conftest import EVENTS

EMAIL = "ann@example.com"  # the sample events' account


def refresh_cookie(body):
    return (
        f"refresh_token={body['refresh_token']}; HttpOnly; SameSite=Strict; Path=/api/v1/auth; "
        f"Max-Age={body['refresh_expires_in']}"
    )


@pytest.fixture(scope="module")
def registered(invoke):
    return invoke("AuthFunction", EVENTS / "auth-register.json")


@pytest.fixture(scope="module")
def logged_in(invoke, registered):
    return invoke("AuthFunction", EVENTS / "auth-login-function-url.json")


def test_register_creates_the_account_and_answers_201_with_tokens_and_the_refresh_cookie(registered):
    reply, body = registered.reply, registered.body
    assert reply["statusCode"] == 201, registered.stderr
    assert body["token_type"] == "Bearer"
    assert body["user"]["email"] == EMAIL
    assert body["access_token"].count(".") == 2 and body["refresh_token"]
    # AUTH_COOKIE_SECURE=false in local runs: no Secure attribute on plain http.
    assert reply["cookies"] == [refresh_cookie(body)]
    assert reply["headers"]["cache-control"] == "no-store"
    assert reply["headers"]["content-type"].startswith("application/json")


def test_login_through_a_function_url_event_answers_200_for_the_same_user(logged_in, registered):
    reply, body = logged_in.reply, logged_in.body
    assert reply["statusCode"] == 200, logged_in.stderr
    assert body["user"]["email"] == EMAIL
    assert body["user"]["id"] == registered.body["user"]["id"]
    assert reply["cookies"] == [refresh_cookie(body)]


def test_me_with_the_access_token_answers_the_account(invoke, logged_in, tmp_path):
    event = json.loads((EVENTS / "auth-me.json").read_text())
    event["headers"]["authorization"] = "Bearer " + logged_in.body["access_token"]
    path = tmp_path / "me.json"
    path.write_text(json.dumps(event))
    invoked = invoke("AuthFunction", path)
    assert invoked.reply["statusCode"] == 200, invoked.stderr
    assert invoked.body["email"] == EMAIL


def test_me_without_a_token_is_401(invoke):
    invoked = invoke("AuthFunction", EVENTS / "auth-me.json")
    assert invoked.reply["statusCode"] == 401
    assert invoked.reply["headers"]["content-type"] == "application/problem+json"


def test_the_refresh_cookie_rotates_the_session(invoke, logged_in, tmp_path):
    event = json.loads((EVENTS / "auth-refresh-cookie.json").read_text())
    event["cookies"] = [f"refresh_token={logged_in.body['refresh_token']}"]
    path = tmp_path / "refresh.json"
    path.write_text(json.dumps(event))
    invoked = invoke("AuthFunction", path)
    assert invoked.reply["statusCode"] == 200, invoked.stderr
    assert invoked.body["user"]["email"] == EMAIL
    assert invoked.body["refresh_token"] != logged_in.body["refresh_token"]
    assert invoked.reply["cookies"] == [refresh_cookie(invoked.body)]


def test_a_malformed_body_is_a_400_problem(invoke):
    invoked = invoke("AuthFunction", EVENTS / "auth-bad-body.json")
    assert invoked.reply["statusCode"] == 400
    assert invoked.reply["headers"]["content-type"] == "application/problem+json"
    assert invoked.body["code"] == "invalid_request"
