"""The system under test, started for real: api-container on its own database, and Debian's nginx
running frontend/nginx.conf in front of it, both on free loopback ports.

Each test module gets its own stack (see conftest.py), so no test sees another module's accounts,
rate-limit counters or sessions. scripts/test-e2e.sh starts PostgreSQL and builds the binary, and
passes them in through the environment:

    E2E_DATABASE_URL  an admin URL of a PostgreSQL server (each stack creates its own database)
    E2E_API_BIN       the api-container binary
    E2E_RUN_DIR       a folder for logs, pid files and rendered configuration
    E2E_ARTIFACTS     where screenshots and logs of failures go
"""

from __future__ import annotations

import grp
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "frontend"
NGINX_TEMPLATE = FRONTEND / "nginx.conf"
TEMPLATE_VARIABLES = "${LATCHKEY_BACKEND} ${LATCHKEY_LISTEN} ${LATCHKEY_ROOT}"


class HarnessError(RuntimeError):
    pass


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise HarnessError(
            f"{name} is not set: run the end-to-end tests with scripts/test-e2e.sh (make test-e2e), "
            "which starts PostgreSQL and builds api-container first"
        )
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(admin_url: str, sql: str) -> None:
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", admin_url, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )


def with_database(admin_url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Polls `url` until it answers 200, failing early (with the log) if the process exits."""
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(f"{process.args[0]} exited with {process.returncode}:\n{tail(log)}")
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            conn.request("GET", parts.path or "/")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as error:
            last = str(error)
        time.sleep(0.1)
    raise HarnessError(f"{url} did not answer 200 within {timeout:.0f} s ({last}):\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass
class Stack:
    """One back-end, one nginx and one database; `base_url` is what the browser opens."""

    name: str
    directory: Path
    admin_url: str
    database: str
    base_url: str = ""
    api_port: int = 0
    web_port: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> list[Path]:
        return [self.directory / "api.log", self.directory / "nginx-error.log", self.directory / "nginx-access.log"]


def start_stack(name: str, backend_env: dict[str, str] | None = None, nginx: bool = True) -> Stack:
    """With `nginx` false the browser talks to api-container itself, which serves the site from
    STATIC_DIR as `make run` does."""
    admin_url = require_env("E2E_DATABASE_URL")
    api_bin = require_env("E2E_API_BIN")
    run_dir = Path(require_env("E2E_RUN_DIR"))
    if not Path(api_bin).is_file():
        raise HarnessError(f"E2E_API_BIN={api_bin} does not exist: build it with cargo build -p api-container")

    directory = run_dir / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    database = f"e2e_{name}_{uuid.uuid4().hex[:8]}".lower()
    psql(admin_url, f'CREATE DATABASE "{database}"')
    stack = Stack(name=name, directory=directory, admin_url=admin_url, database=database)
    try:
        stack.api_port = free_port()
        stack.web_port = free_port()
        env = dict(backend_env or {})
        if nginx:
            stack.base_url = f"http://127.0.0.1:{stack.web_port}"
        else:
            stack.base_url = f"http://127.0.0.1:{stack.api_port}"
            env["STATIC_DIR"] = str(FRONTEND / "public")
        start_backend(stack, api_bin, env)
        if nginx:
            start_nginx(stack)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def start_backend(stack: Stack, api_bin: str, extra: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "DB_", "STATIC_DIR", "LISTEN_ADDR"))}
    env.update(
        {
            "DATABASE_URL": with_database(stack.admin_url, stack.database),
            "LISTEN_ADDR": f"127.0.0.1:{stack.api_port}",
            # The browser's origin: the refresh cookie's Origin check compares against it.
            "AUTH_ISSUER": stack.base_url,
            "AUTH_COOKIE_SECURE": "false",
            # nginx connects from loopback; its X-Forwarded-For is believed.
            "AUTH_TRUSTED_PROXIES": "127.0.0.1/32",
            "AUTH_PBKDF2_ITERATIONS": "1000",
            # Every test signs in from 127.0.0.1; per-IP limits would only measure the suite.
            "AUTH_IP_LOGINS_PER_MINUTE": "0",
            "AUTH_IP_REGISTRATIONS_PER_HOUR": "0",
            "LOG_FORMAT": "json",
            "RUST_LOG": "info",
        }
    )
    env.update(extra)
    log = stack.directory / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [api_bin], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    remember(stack.processes, process)
    wait_for(f"{stack.api_url}/readyz", process, log)


def render_nginx_template(backend: str, listen: str, root: Path) -> str:
    """frontend/nginx.conf with its three variables filled in, exactly as the image does it."""
    env = dict(os.environ, LATCHKEY_BACKEND=backend, LATCHKEY_LISTEN=listen, LATCHKEY_ROOT=str(root))
    result = subprocess.run(
        ["envsubst", TEMPLATE_VARIABLES],
        input=NGINX_TEMPLATE.read_text(),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def start_nginx(stack: Stack) -> None:
    d = stack.directory
    # A copy of the site, so that nginx's unprivileged workers can read it wherever the checkout
    # lives; file modes are kept, so a file they could not read in production fails here too.
    site = d / "site"
    shutil.copytree(FRONTEND / "public", site)
    config = render_nginx_template(f"127.0.0.1:{stack.api_port}", f"127.0.0.1:{stack.web_port}", site)
    process = launch_nginx(d, config)
    remember(stack.processes, process)
    wait_for(f"{stack.base_url}/healthz", process, d / "nginx-error.log")


def launch_nginx(d: Path, config: str) -> subprocess.Popen:
    """Debian's nginx with `config` in its http context (frontend/nginx.conf rendered, or any
    other server), in a private prefix under `d`: its own pid, logs and temp folders. Checked
    with `nginx -t` first. The caller remembers the process and waits for it to answer."""
    temp = d / "nginx-temp"
    temp.mkdir()
    user = ""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
        d.chmod(0o755)
        temp.chmod(0o777)
        d.parent.chmod(d.parent.stat().st_mode | 0o055)
    (d / "latchkey.conf").write_text(config)
    (d / "nginx.conf").write_text(
        f"""# A private nginx for one e2e test module: its own prefix, pid, logs and temp folders.
{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {d}/nginx-access.log;
    sendfile on;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {d}/latchkey.conf;
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    base = [nginx, "-p", str(d), "-e", str(d / "nginx-error.log"), "-c", str(d / "nginx.conf")]
    check = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True)
    if check.returncode != 0:
        raise HarnessError(f"nginx -t rejected the configuration:\n{check.stderr}{tail(d / 'nginx-error.log')}")
    with (d / "nginx-stdout.log").open("wb") as out:
        return subprocess.Popen(base, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def remember(processes: list[subprocess.Popen], process: subprocess.Popen) -> None:
    """Tracked twice: in `processes` for the fixture's teardown, and in a pid file for the
    script's trap, which stops whatever is left when pytest itself is killed."""
    processes.append(process)
    with (Path(os.environ["E2E_RUN_DIR"]) / "pids").open("a") as pids:
        pids.write(f"{process.pid}\n")


def stop_stack(stack: Stack) -> None:
    # nginx first, so nothing reaches a back-end that is going away.
    stop_processes(stack.processes)
    try:
        psql(stack.admin_url, f'DROP DATABASE IF EXISTS "{stack.database}" WITH (FORCE)')
    except subprocess.CalledProcessError:
        pass


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """TERM to each process group, newest first; KILL to any that has not exited in 15 s."""
    for process in reversed(processes):
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for process in reversed(processes):
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---- a small HTTP client for checks below the browser ---------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self):
        return json.loads(self.body)


def call(
    base_url: str,
    method: str,
    path: str,
    body=None,
    headers: dict[str, str] | None = None,
    source_ip: str | None = None,
    raw: bytes | None = None,
) -> Reply:
    """One HTTP request; `source_ip` picks the loopback address it comes from (127.0.0.x)."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=10, source_address=(source_ip, 0) if source_ip else None
    )
    all_headers = dict(headers or {})
    payload = raw
    if body is not None:
        payload = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()
