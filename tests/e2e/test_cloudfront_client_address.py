"""The client's real address through CloudFront -> the front-end host's nginx -> the back-end
host's nginx -> api-container, as the stack sets it up, so that rate limits key on the client and
never on CloudFront or either nginx.

- The front-end host's nginx: the real-IP file infra/host/bootstrap.sh writes
  (infra/host/cloudfront_realip.py from an ip-ranges.json in which 127.0.0.2 plays CloudFront's
  origin-facing range), then the real frontend/nginx.conf, rendered as the front-end host renders
  it.
- The back-end host's nginx: the site `latchkey-deploy init` writes (api-container/deploy), run
  with a settings file of this test's folders and ports, its upstream the container's port.
- api-container: AUTH_TRUSTED_PROXIES exactly as infra/environment.yaml's back-end user data
  passes it (127.0.0.1/32 and the VPC's range: the back-end's own nginx reaches it from 127.0.0.1,
  and the front-end host from the VPC, played here by 127.0.0.1 too), and a per-network login
  limit of 3 a minute (the stack keeps the default, 30: only the number is lowered, not how the
  key is found).
- Requests come from 127.0.0.2 ("CloudFront") with X-Forwarded-For as CloudFront sends it: what
  the viewer sent, then the viewer's address appended. Requests from 127.0.0.3 play anyone who
  reaches port 80 directly, which the front-end's security group allows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from harness import REPO, call, free_port, launch_nginx, remember, render_nginx_template, start_stack, stop_stack, wait_for

CLOUDFRONT = "127.0.0.2"  # the peer nginx believes, as it believes CloudFront's origin-facing ranges
STRANGER = "127.0.0.3"  # a peer that is not CloudFront
LIMIT = 3


class _Cfn(yaml.SafeLoader):
    pass


_Cfn.add_multi_constructor("!", lambda loader, suffix, node: None)


def trusted_proxies_from_the_stack() -> str:
    """--trusted-proxies from the back-end's user data in infra/environment.yaml, with VpcCidr's
    default filled in: what bootstrap.sh writes as AUTH_TRUSTED_PROXIES."""
    text = (REPO / "infra" / "environment.yaml").read_text()
    [value] = set(re.findall(r"--trusted-proxies '([^']+)'", text))
    vpc = yaml.load(text, Loader=_Cfn)["Parameters"]["VpcCidr"]["Default"]  # noqa: S506 - SafeLoader
    return value.replace("${VpcCidr}", vpc)


def realip_conf(folder: Path) -> str:
    ranges = folder / "ip-ranges.json"
    ranges.write_text(json.dumps({
        "prefixes": [
            {"ip_prefix": f"{CLOUDFRONT}/32", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING"},
            # CloudFront's edge ranges (and everything else in the file) are not believed.
            {"ip_prefix": f"{STRANGER}/32", "region": "GLOBAL", "service": "CLOUDFRONT"},
        ],
        "ipv6_prefixes": [],
    }))
    done = subprocess.run(
        [sys.executable, str(REPO / "infra" / "host" / "cloudfront_realip.py"), str(ranges)],
        capture_output=True, text=True, check=True,
    )
    return done.stdout


def backend_host_nginx(stack) -> tuple[Path, int]:
    """The back-end host's nginx with the site latchkey-deploy writes, its upstream (the slot
    that serves) the container's port: its folder (logs) and its port."""
    d = stack.directory / "backend-host"
    d.mkdir()
    os.chmod(d, 0o755)
    port = free_port()
    settings = d / "deploy.conf"
    check = d / "check.conf"
    settings.write_text(
        f"ENV_FILE={d}/api.env\nSTATE_DIR={d}/state\nLOCK_FILE={d}/deploy.lock\n"
        f"CONTAINER_NAME=latchkey-client-address\nLISTEN=127.0.0.1:{port}\n"
        f"BLUE_PORT={stack.api_port}\nGREEN_PORT={free_port()}\n"
        f"NGINX_CONF={check}\nNGINX_SITE_FILE={d}/site.conf\nNGINX_UPSTREAM_FILE={d}/upstream.conf\n"
        f"NGINX_PID_FILE={d}/nginx.pid\n"
    )
    # What `latchkey-deploy init` checks its site with (`nginx -t`), as the host's nginx.conf
    # includes it; launch_nginx below runs the same site in its own prefix.
    temp = "".join(f"    {kind}_temp_path {d}/check-{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    check.write_text(
        f"pid {d}/check.pid;\nerror_log {d}/check-error.log;\nevents {{}}\n"
        f"http {{\n{temp}    access_log {d}/check-access.log;\n    include {d}/site.conf;\n}}\n"
    )
    subprocess.run(
        [str(REPO / "api-container" / "deploy" / "latchkey-deploy"), "init"],
        env=dict(os.environ, LATCHKEY_DEPLOY_CONF=str(settings)), capture_output=True, text=True, check=True,
    )
    served = d / "nginx"
    served.mkdir()
    process = launch_nginx(served, (d / "site.conf").read_text())
    remember(stack.processes, process)
    wait_for(f"http://127.0.0.1:{port}/healthz", process, served / "nginx-error.log")
    return served, port


@pytest.fixture(scope="module")
def edge():
    trusted = trusted_proxies_from_the_stack()
    assert trusted.startswith("127.0.0.1/32,")
    stack = start_stack(
        "cloudfront_client_address",
        backend_env={"AUTH_TRUSTED_PROXIES": trusted, "AUTH_IP_LOGINS_PER_MINUTE": str(LIMIT)},
        nginx=False,
    )
    try:
        d = stack.directory / "frontend-host"
        d.mkdir()
        site = d / "site"
        shutil.copytree(REPO / "frontend" / "public", site)
        os.chmod(d, 0o755)
        backend_dir, backend_port = backend_host_nginx(stack)
        port = stack.web_port
        config = realip_conf(d) + render_nginx_template(f"127.0.0.1:{backend_port}", f"127.0.0.1:{port}", site)
        (d / "latchkey.conf").write_text(config)
        process = launch_nginx(d, config)
        remember(stack.processes, process)
        base_url = f"http://127.0.0.1:{port}"
        wait_for(f"{base_url}/healthz", process, d / "nginx-error.log")
        stack.base_url = base_url
        stack.nginx_dir = d
        stack.backend_nginx_dir = backend_dir
        yield stack
    finally:
        stop_stack(stack)


def login(edge, source: str, forwarded: str | None) -> int:
    """A failed sign-in (an unknown email, a new one each time, so no per-email back-off)."""
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    reply = call(
        edge.base_url, "POST", "/api/v1/auth/login",
        body={"email": f"{uuid.uuid4().hex[:12]}@example.com", "password": "not the password 123"},
        headers=headers, source_ip=source,
    )
    assert reply.status in (401, 429), (reply.status, reply.body[:300])
    if reply.status == 429:
        assert reply.header("Retry-After")
        assert reply.json().get("code") == "too_many_requests", reply.body
    return reply.status


def cloudfront(viewer: str, sent: str | None = None) -> str:
    """X-Forwarded-For as CloudFront sends it to the origin: the viewer's own header (if any),
    then the viewer's address."""
    return f"{sent}, {viewer}" if sent else viewer


def test_two_clients_behind_cloudfront_are_limited_separately(edge):
    a, b = "198.51.100.7", "203.0.113.9"
    assert [login(edge, CLOUDFRONT, cloudfront(a)) for _ in range(LIMIT)] == [401] * LIMIT
    # a has spent its budget; b, through the same CloudFront address and nginx, has all of it.
    assert login(edge, CLOUDFRONT, cloudfront(a)) == 429
    assert [login(edge, CLOUDFRONT, cloudfront(b)) for _ in range(LIMIT)] == [401] * LIMIT
    assert login(edge, CLOUDFRONT, cloudfront(b)) == 429
    # nginx saw the viewers, not CloudFront (its access log's first field is $remote_addr).
    seen = [line.split()[0] for line in (edge.nginx_dir / "nginx-access.log").read_text().splitlines() if "/auth/login" in line]
    assert set(seen) == {a, b}
    # The back-end host's nginx saw only the front-end host: the client reached the container in
    # X-Forwarded-For, through both hops.
    seen = [line.split()[0] for line in (edge.backend_nginx_dir / "nginx-access.log").read_text().splitlines() if "/auth/login" in line]
    assert seen and set(seen) == {"127.0.0.1"}


def test_a_limited_client_cannot_escape_by_sending_its_own_x_forwarded_for(edge):
    c = "192.0.2.33"
    for _ in range(LIMIT):
        assert login(edge, CLOUDFRONT, cloudfront(c)) == 401
    # What the viewer writes into X-Forwarded-For stays left of the address CloudFront appends.
    for forged in ("10.9.8.7", "127.0.0.1", "192.0.2.34, 198.51.100.200"):
        assert login(edge, CLOUDFRONT, cloudfront(c, sent=forged)) == 429, forged


def test_a_forged_x_forwarded_for_from_a_peer_that_is_not_cloudfront_is_not_believed(edge):
    # Straight to port 80 (or through CloudFront's edge ranges, which are not origin-facing): each
    # request claims another client, and all of them count as the peer itself.
    statuses = [login(edge, STRANGER, f"203.0.113.{100 + i}") for i in range(LIMIT + 2)]
    assert statuses == [401] * LIMIT + [429, 429]
    # The addresses it claimed were never charged: a real client with one of them is not limited.
    assert login(edge, CLOUDFRONT, cloudfront("203.0.113.100")) == 401
