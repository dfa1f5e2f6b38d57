#!/usr/bin/env python3
"""A steady stream of real requests through the host's nginx, for scripts/test-deploy.sh.

It registers one account, then sends, at a fixed total rate, GET /api/v1/me (a token check that
reads the session from PostgreSQL), POST /api/v1/auth/login (a password check) and GET
/.well-known/jwks.json (with --pages also the site: GET / and /assets/app.css), until
--stop-file appears or --max-seconds pass (both bound it, as does the request count that the
rate implies). Every request must get its expected status.

Two kinds of client, because both exist in the wild:
- most workers open a new connection per request and never retry: any error is a failure;
- one worker keeps its connection alive, as browsers and proxies do, and sends only GETs on it.
  It follows the rule HTTP clients follow (RFC 9112 section 9.3.1): an idempotent request that
  fails on a *reused* connection before a single byte of the answer arrived is sent once more on
  a fresh connection. That case is not a failure of the swap but of HTTP/1.1 itself: a server
  (here an old nginx worker being retired) may close an idle connection at the very moment the
  client reuses it, and nothing on the wire can prevent it. Those retries are counted and
  reported; a failure of the retry, or any other error, is a failure. (A POST is never sent on
  a reused connection here, because a client may not blindly resend one.)

Writes a JSON summary to --out; exits 0 whether or not requests failed (the caller judges).
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import uuid

PASSWORD = "violet kestrel orbits a quiet harbour 42"


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.ok = 0
        self.failures = 0
        self.stale_retries = 0
        self.by_outcome = {}
        self.first_failures = []
        self.latencies = {}

    def record(self, op, outcome, ok, detail="", seconds=None):
        with self.lock:
            self.requests += 1
            if seconds is not None:
                self.latencies.setdefault(op, []).append(seconds)
            key = f"{op} {outcome}"
            self.by_outcome[key] = self.by_outcome.get(key, 0) + 1
            if ok:
                self.ok += 1
            else:
                self.failures += 1
                if len(self.first_failures) < 20:
                    self.first_failures.append(
                        {"at": time.strftime("%H:%M:%S"), "op": op, "outcome": outcome, "detail": detail[:300]}
                    )


def request(conn, method, path, body=None, headers=None):
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def register(port, deadline):
    """The account the load uses. Set-up, not load: retried until the service answers."""
    email = f"load-{uuid.uuid4().hex[:12]}@example.com"
    last = None
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            status, body = request(conn, "POST", "/api/v1/auth/register", {"email": email, "password": PASSWORD})
            conn.close()
            if status == 201:
                return email, json.loads(body)["access_token"]
            last = f"{status} {body[:200]!r}"
        except OSError as error:
            last = repr(error)
        time.sleep(0.5)
    sys.exit(f"load: could not register an account: {last}")


def operation(n, email, token, keep_alive, pages=False):
    """The n-th request of a worker: mostly token checks, some logins, some JWKS fetches; with
    `pages` (a front-end deploy), two in five are the site's page and a stylesheet instead."""
    if pages and n % 5 == 1:
        return "page", "GET", "/", None, {}, 200
    if pages and n % 5 == 4:
        return "asset", "GET", "/assets/app.css", None, {}, 200
    if n % 20 == 3 and not keep_alive:
        return "login", "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD}, {}, 200
    if n % 20 in (7, 17):
        return "jwks", "GET", "/.well-known/jwks.json", None, {}, 200
    return "me", "GET", "/api/v1/me", None, {"Authorization": f"Bearer {token}"}, 200


def worker(index, args, email, token, stats, stop, start, interval, keep_alive):
    conn = None
    used = False
    n = 0
    next_at = start + index * interval / args.workers
    while not stop.is_set():
        now = time.monotonic()
        if next_at > now:
            time.sleep(min(next_at - now, 0.2))
            continue
        next_at += interval
        n += 1
        op, method, path, body, headers, expected = operation(n, email, token, keep_alive, args.pages)
        attempts = 2 if keep_alive and method == "GET" else 1
        for attempt in range(attempts):
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
                used = False
            reused = used
            sent_at = time.monotonic()
            try:
                status, payload = request(conn, method, path, body, headers)
                used = True
                if not keep_alive:
                    conn.close()
                    conn = None
                stats.record(
                    op,
                    str(status),
                    status == expected,
                    payload[:200].decode(errors="replace"),
                    time.monotonic() - sent_at,
                )
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                conn.close()
                conn = None
                if reused and attempt + 1 < attempts:
                    with stats.lock:
                        stats.stale_retries += 1
                    continue
                stats.record(op, type(error).__name__, False, repr(error))
                break
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                conn = None
                stats.record(op, type(error).__name__, False, repr(error))
                break
    if conn is not None:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="nginx's port on 127.0.0.1")
    parser.add_argument("--rate", type=float, default=80.0, help="requests per second, all workers together")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--ready-file", required=True, help="created once 20 requests have succeeded")
    parser.add_argument("--out", required=True)
    parser.add_argument("--pages", action="store_true", help="the site's page and a stylesheet too")
    args = parser.parse_args()

    began = time.monotonic()
    email, token = register(args.port, began + 30)
    stats = Stats()
    stop = threading.Event()
    interval = args.workers / args.rate
    start = time.monotonic()
    threads = [
        threading.Thread(
            target=worker,
            args=(i, args, email, token, stats, stop, start, interval, i == 0),
            daemon=True,
        )
        for i in range(args.workers)
    ]
    for thread in threads:
        thread.start()
    max_requests = int(args.rate * args.max_seconds)
    announced = False
    while True:
        time.sleep(0.05)
        if not announced and stats.ok >= 20:
            open(args.ready_file, "w").close()
            announced = True
        if os.path.exists(args.stop_file) or time.monotonic() - start > args.max_seconds:
            break
        if stats.requests >= max_requests:
            break
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    elapsed = time.monotonic() - start
    summary = {
        "requests": stats.requests,
        "ok": stats.ok,
        "failures": stats.failures,
        "stale_keepalive_retries": stats.stale_retries,
        "seconds": round(elapsed, 1),
        "rate": round(stats.requests / elapsed, 1) if elapsed else 0,
        "by_outcome": dict(sorted(stats.by_outcome.items())),
        "latency_ms": {
            op: {"p50": round(1000 * sorted(v)[len(v) // 2]), "max": round(1000 * max(v))}
            for op, v in sorted(stats.latencies.items())
        },
        "first_failures": stats.first_failures,
    }
    with open(args.out, "w") as out:
        json.dump(summary, out, indent=1)


if __name__ == "__main__":
    main()
