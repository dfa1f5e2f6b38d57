"""`sam local start-api`: the auth API on a local port, reached over HTTP like any client would.
The public endpoints: register, login, refresh (the cookie, from the API's own origin), the JWKS
that verifies the tokens, healthz; and /api/v1/me with the access token."""

import base64
import json
import urllib.error
import urllib.request
import uuid

import pytest

PASSWORD = "correct horse battery staple"


def call(method, url, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def cookie_value(headers, name):
    for header in headers.get_all("set-cookie") or []:
        first = header.split(";", 1)[0]
        if first.startswith(name + "="):
            return first.split("=", 1)[1], header
    raise AssertionError(f"no {name} cookie in {headers.get_all('set-cookie')}")


def segment(text):
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


@pytest.fixture(scope="module")
def account(api):
    email = f"sam-{uuid.uuid4().hex[:12]}@example.com"
    status, headers, body = call("POST", f"{api}/api/v1/auth/register", {"email": email, "password": PASSWORD})
    assert status == 201, body
    return email, headers, json.loads(body)


def test_healthz(api):
    status, headers, body = call("GET", f"{api}/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


def test_register_answers_201_with_tokens_and_sets_the_refresh_cookie(account):
    email, headers, body = account
    assert body["token_type"] == "Bearer"
    assert body["user"]["email"] == email
    value, header = cookie_value(headers, "refresh_token")
    assert value == body["refresh_token"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/api/v1/auth" in header
    assert headers["cache-control"] == "no-store"


def test_the_jwks_verifies_the_access_tokens_key(api, account):
    status, headers, body = call("GET", f"{api}/.well-known/jwks.json")
    assert status == 200
    keys = json.loads(body)["keys"]
    header = segment(account[2]["access_token"].split(".")[0])
    assert header["kid"] in {key["kid"] for key in keys}, (header, keys)


def test_login_then_me(api, account):
    email = account[0]
    status, headers, body = call("POST", f"{api}/api/v1/auth/login", {"email": email, "password": PASSWORD})
    assert status == 200, body
    tokens = json.loads(body)
    assert tokens["user"]["email"] == email
    status, _, body = call("GET", f"{api}/api/v1/me", headers={"authorization": "Bearer " + tokens["access_token"]})
    assert status == 200, body
    assert json.loads(body)["email"] == email


def test_a_wrong_password_is_401(api, account):
    status, headers, body = call("POST", f"{api}/api/v1/auth/login", {"email": account[0], "password": "not it at all"})
    assert status == 401, body
    assert headers["content-type"] == "application/problem+json"


def test_refresh_with_the_cookie_from_the_apis_own_origin_rotates_it(api, account):
    email = account[0]
    status, headers, body = call("POST", f"{api}/api/v1/auth/login", {"email": email, "password": PASSWORD})
    assert status == 200, body
    old, _ = cookie_value(headers, "refresh_token")
    status, headers, body = call(
        "POST", f"{api}/api/v1/auth/refresh", headers={"cookie": f"refresh_token={old}", "origin": api}
    )
    assert status == 200, body
    new, _ = cookie_value(headers, "refresh_token")
    assert new != old
    # A request with Origin is a browser's: the refresh token travels in the cookie only.
    assert "refresh_token" not in json.loads(body), body
    # (The old one still works for AUTH_REFRESH_REUSE_GRACE_SECS, 10 s, by design.) One the
    # service never issued does not.
    status, headers, body = call(
        "POST", f"{api}/api/v1/auth/refresh", headers={"cookie": "refresh_token=" + "A" * 43, "origin": api}
    )
    assert status == 401, body
    assert headers["content-type"] == "application/problem+json"


def test_refresh_from_another_origin_is_refused(api, account):
    status, headers, body = call("POST", f"{api}/api/v1/auth/login", {"email": account[0], "password": PASSWORD})
    value, _ = cookie_value(headers, "refresh_token")
    status, headers, body = call(
        "POST", f"{api}/api/v1/auth/refresh",
        headers={"cookie": f"refresh_token={value}", "origin": "https://evil.example"},
    )
    assert status == 403, body
    assert headers["content-type"] == "application/problem+json"


def test_a_malformed_body_is_a_400_problem(api):
    status, headers, body = call("POST", f"{api}/api/v1/auth/register", b"{not json")
    assert status == 400, body
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "invalid_request"
