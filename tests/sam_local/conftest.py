"""`sam local invoke` and `sam local start-api` on the real Docker engine (issue 17).

scripts/test-sam-local.sh has run scripts/sam-local.sh (the static bootstraps, the local
template, the FROM-scratch base image) and runs this suite in the lambda-tools virtualenv, with
`sam` on PATH and DATABASE_URL an admin URL of a PostgreSQL on this machine's loopback.

Each `sam` command is the one docs/deploy.md shows, with samconfig.toml's settings (the local
template, --skip-pull-image, host.docker.internal); only --env-vars differs, to name this run's
database and moto, which scripts/relay.py makes reachable from the containers.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import relay  # noqa: E402

EVENTS = ROOT / "events"
MOTO_SEED = {
    "repository": "latchkey-api",
    "tag": "v1.4.2",
    # The digest events/ecr-push.json carries, so that the file is sent as it is.
    "digest": json.loads((EVENTS / "ecr-push.json").read_text())["detail"]["image-digest"],
    "tag_key": "latchkey-role",
    "tag_value": "api",
    "instances": 2,
    "untagged": 1,
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gateway():
    return relay.bridge_gateway()


@pytest.fixture(scope="session")
def database():
    admin = os.environ["DATABASE_URL"].split("?")[0]
    url = urllib.parse.urlsplit(admin)
    name = f"latchkey_sam_local_{os.getpid()}"
    subprocess.run(["psql", "-X", "-q", admin, "-c", f"CREATE DATABASE {name}"], check=True)
    yield {"port": url.port or 5432, "user": url.username or "postgres", "name": name}
    subprocess.run(
        ["psql", "-X", "-q", admin, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False
    )


@pytest.fixture(scope="session")
def moto(gateway):
    """moto's server holding the pushed image, the SSM document, two tagged instances, one not."""
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "functions/deploy/tests/moto_server.py"), "--seed", json.dumps(MOTO_SEED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = server.stdout.readline()
    if not line:
        server.wait(10)
        pytest.fail(f"moto_server.py did not start (exit code {server.returncode})")
    world = json.loads(line)
    port = int(world["endpoint"].rsplit(":", 1)[1])
    world["relayed_port"] = relay.start(gateway, 0, port)
    yield world
    server.stdin.close()
    server.wait(30)


@pytest.fixture(scope="session")
def api_port():
    return free_port()


@pytest.fixture(scope="session")
def env_vars(tmp_path_factory, gateway, database, moto, api_port):
    """The --env-vars file: this run's database and moto, reached through the relay."""
    db_port = relay.start(gateway, 0, database["port"])
    values = {
        "AuthFunction": {
            "DATABASE_URL": f"postgres://{database['user']}@host.docker.internal:{db_port}/{database['name']}?sslmode=disable",
            "AUTH_ISSUER": f"http://127.0.0.1:{api_port}",
            "AUTH_COOKIE_SECURE": "false",
            # Hashing is not what is under test: fast hashes keep each register and login short.
            "AUTH_PBKDF2_ITERATIONS": "1000",
            "LOG_FORMAT": "json",
        },
        "DeployFunction": {
            "AWS_ENDPOINT_URL": f"http://host.docker.internal:{moto['relayed_port']}",
            # As events/env.json: SAM resolves AWS::URLSuffix to "localhost" and !Ref of the SSM
            # document to its logical id, where AWS gives amazonaws.com and the document's name.
            "DEPLOY_REGISTRY": "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "DEPLOY_DOCUMENT": moto["document"],
            "DEPLOY_WAIT_TIMEOUT_SECS": "60",
        },
    }
    path = tmp_path_factory.mktemp("sam-local") / "env.json"
    path.write_text(json.dumps(values))
    return path


class Invoked:
    def __init__(self, completed):
        self.completed = completed
        self.stderr = completed.stderr
        lines = [line for line in completed.stdout.splitlines() if line.strip()]
        assert lines, f"sam local invoke printed nothing on stdout; stderr:\n{completed.stderr}"
        # The function's answer is the last line SAM prints on stdout.
        self.reply = json.loads(lines[-1])

    @property
    def body(self):
        return json.loads(self.reply.get("body") or "null")


@pytest.fixture(scope="session")
def invoke(env_vars):
    """`sam local invoke FUNCTION -e EVENT` with samconfig.toml's settings and this run's variables."""

    def run(function, event):
        completed = subprocess.run(
            ["sam", "local", "invoke", function, "-e", str(event), "--env-vars", str(env_vars)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert completed.returncode == 0, f"sam local invoke exited {completed.returncode}:\n{completed.stderr}"
        return Invoked(completed)

    return run


def _wait_for(url, process, log, seconds):
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sam local start-api exited {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=60) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"sam local start-api did not answer {url} within {seconds} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def api(env_vars, api_port, tmp_path_factory):
    """`sam local start-api` on 127.0.0.1:api_port; the base URL."""
    log = tmp_path_factory.mktemp("start-api") / "sam.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            ["sam", "local", "start-api", "--host", "127.0.0.1", "--port", str(api_port),
             "--env-vars", str(env_vars), "--debug"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{api_port}"
    try:
        _wait_for(f"{base}/healthz", process, log, 180)
        yield base
    finally:
        # Ctrl-C, as a person stops it: SAM then stops and removes its warm containers. Any it
        # left behind are removed by the ids it logged (--debug), never by a broad filter.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for line in log.read_text().splitlines():
            if "SAM_CONTAINER_ID:" in line:
                container = line.rsplit("SAM_CONTAINER_ID:", 1)[1].strip()
                subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
