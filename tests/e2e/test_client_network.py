"""The edge rate limit's key: frontend/nginx.conf's `map $remote_addr $latchkey_client_network`,
which must count clients as the back-end does (an IPv4 address; the /64 of an IPv6 one; an
IPv4-mapped IPv6 address as its IPv4 address).

The map block is taken from the real file, so this follows any change to it, and put in a private
nginx whose realip module believes X-Forwarded-For from loopback and whose only location answers
the key. Python's ipaddress module says what each key must denote."""

from __future__ import annotations

import ipaddress
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from harness import NGINX_TEMPLATE, call, free_port, launch_nginx, remember, require_env, stop_processes, wait_for

MAP_BLOCK = re.compile(r"^map \$remote_addr \$latchkey_client_network \{\n.*?^\}\n", re.M | re.S)


def map_block() -> str:
    found = MAP_BLOCK.findall(NGINX_TEMPLATE.read_text())
    assert len(found) == 1, "frontend/nginx.conf has one map $remote_addr $latchkey_client_network { ... }"
    return found[0]


@pytest.fixture(scope="module")
def edge():
    """The base URL of an nginx that answers every request with its client network key."""
    d = Path(require_env("E2E_RUN_DIR")) / "client_network"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    port = free_port()
    config = f"""{map_block()}
server {{
    listen 127.0.0.1:{port};
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    location / {{
        default_type text/plain;
        return 200 "$latchkey_client_network";
    }}
}}
"""
    processes = []
    try:
        process = launch_nginx(d, config)
        remember(processes, process)
        base_url = f"http://127.0.0.1:{port}"
        wait_for(f"{base_url}/", process, d / "nginx-error.log")
        yield base_url
    finally:
        stop_processes(processes)
        artifacts = Path(os.environ.get("E2E_ARTIFACTS", "artifacts/e2e")) / "logs" / "client_network"
        artifacts.mkdir(parents=True, exist_ok=True)
        for log in ["nginx-error.log", "latchkey.conf"]:
            if (d / log).exists():
                shutil.copy(d / log, artifacts / log)


def key_for(edge: str, forwarded: str) -> str:
    reply = call(edge, "GET", "/", headers={"X-Forwarded-For": forwarded})
    assert reply.status == 200, forwarded
    return reply.body.decode()


def expected(forwarded: str):
    """What the back-end counts: the IPv4 address, or the IPv6 address's /64 network."""
    address = ipaddress.ip_address(forwarded)
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.version == 4:
        return address
    return ipaddress.ip_network((address, 64), strict=False)


def denotes(key: str):
    """The key as an address or network; a network must have no host bits set (strict)."""
    if "/" in key:
        return ipaddress.ip_network(key, strict=True)
    return ipaddress.ip_address(key)


def mismatch(edge: str, forwarded: str) -> str | None:
    key = key_for(edge, forwarded)
    want = expected(forwarded)
    try:
        got = denotes(key)
    except ValueError:
        return f"{forwarded}: key {key!r} is neither an address nor a network"
    if got != want or type(got) is not type(want):
        return f"{forwarded}: key {key!r}, expected {want}"
    if key != key.lower():
        return f"{forwarded}: key {key!r} is not lower case"
    return None


# The brief's cases, with the key nginx must produce where its exact text matters.
@pytest.mark.parametrize(
    "forwarded, key",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:192.0.2.5", "192.0.2.5"),
        ("::FFFF:192.0.2.5", "192.0.2.5"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:FFFF::9", "2001:db8:1:2::/64"),
        ("2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8::1", None),
        ("2001:db8:1::5", None),
        ("::1", None),
        ("::", None),
        ("fe80::1", None),
        ("::192.0.2.5", None),
        ("2001::5:6:7:8:9", None),
        ("2001:0:0:5:6:7:8:9", None),
        ("::3:4:5:6:7:8", None),
        ("::4:5:6:7:8", None),
        ("1:0:0:2:3:0:0:4", None),
    ],
)
def test_the_key_is_the_ipv4_address_or_the_ipv6_64(edge, forwarded, key):
    assert mismatch(edge, forwarded) is None
    if key is not None:
        assert key_for(edge, forwarded) == key


def shapes() -> list[str]:
    """Every place and length of a zero run in an IPv6 address (so every way nginx can compress
    it), with other groups of random widths, plus random addresses with scattered zeros."""
    rng = random.Random(13)

    def group() -> int:
        return rng.choice([rng.randrange(1, 0x10), rng.randrange(0x10, 0x100), rng.randrange(0x100, 0x10000)])

    addresses = []
    for start in range(8):
        for length in range(0, 9 - start):
            groups = [0 if start <= i < start + length else group() for i in range(8)]
            addresses.append(str(ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))))
    for _ in range(300):
        groups = [0 if rng.random() < 0.5 else group() for _ in range(8)]
        addresses.append(":".join(f"{g:x}" for g in groups))
    for _ in range(20):
        addresses.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        addresses.append(f"::ffff:{ipaddress.IPv4Address(rng.getrandbits(32))}")
    return addresses


def test_every_compressed_form_of_an_ipv6_address_keys_its_64(edge):
    problems = [p for p in (mismatch(edge, forwarded) for forwarded in shapes()) if p]
    assert problems == [], "\n".join(problems)


def test_the_edge_rate_limit_is_keyed_on_the_client_network():
    template = NGINX_TEMPLATE.read_text()
    assert re.search(r"^limit_req_zone \$latchkey_client_network zone=latchkey_auth:", template, re.M)
