#!/usr/bin/env python3
"""Register, log in and read /api/v1/me on 127.0.0.1:PORT; exit 1 with the reason otherwise.

Used by scripts/test-deploy.sh against the container directly and through nginx.
"""

import http.client
import json
import sys
import uuid

PASSWORD = "amber falcon crosses the winter delta 7"


def call(port, method, path, body=None, token=None):
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def expect(what, got, want, body):
    if got != want:
        sys.exit(f"smoke: {what}: expected {want}, got {got}: {body[:300]!r}")


def main():
    port = int(sys.argv[1])
    email = f"smoke-{uuid.uuid4().hex[:12]}@example.com"
    status, body = call(port, "POST", "/api/v1/auth/register", {"email": email, "password": PASSWORD})
    expect("register", status, 201, body)
    registered = json.loads(body)["user"]
    status, body = call(port, "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
    expect("login", status, 200, body)
    token = json.loads(body)["access_token"]
    status, body = call(port, "GET", "/api/v1/me", token=token)
    expect("me", status, 200, body)
    me = json.loads(body)
    if me.get("id") != registered["id"] or me.get("email") != email:
        sys.exit(f"smoke: /me answered {me}, expected the account {registered}")
    print(f"register 201, login 200, me 200 ({me['id']})")


if __name__ == "__main__":
    main()
