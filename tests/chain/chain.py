"""The pieces of the deploy chain on this machine, for tests/chain/test_chain.py.

Each class is one link as it exists on AWS, played here by the real program where one exists:

- Registry: Debian's docker-registry on 127.0.0.1, where `docker push` puts the image (ECR's
  role for the hosts: they pull from it, by digest).
- the ECR API: moto's server. The pushed image's manifest and blobs are copied into moto's ECR
  through the same layer-upload calls `docker push` makes against ECR, under the same digest, so
  that the deploy Lambda's DescribeImages confirms the real digest.
- SsmAgent: what moto cannot emulate. moto records SendCommand (document, parameters, targets
  resolved from EC2 tags) but marks every invocation Success at once and runs nothing. The agent
  takes each command from moto as it is sent, reads the document back from moto (created from
  template.yaml's DeployDocument content), checks the parameters against the document's
  allowedPattern, substitutes them into the runShellScript lines, and runs that script on each
  target "host" one at a time, stopping at the first error (MaxConcurrency 1 and MaxErrors 0, the
  only rate control it emulates: it refuses any other). It writes status, exit code and output
  back into moto's invocation records, which GetCommandInvocation and ListCommands then serve to
  the Lambda, as SSM does with what its agents report.
- Host: a back-end host. Its own folder, ports, nginx and latchkey-deploy settings; the SSM
  script runs in a private mount namespace where /usr/local/sbin holds the repository's
  api-container/deploy/latchkey-deploy, so the document's own command line runs unchanged. All
  hosts share this machine's one Docker engine (an image pulled by one is on the other).
- Frontend: the front-end host. nginx with its main file only; the site (the real
  frontend/nginx.conf, one `server` line per back-end, and frontend/public) is put in place by
  frontend/deploy/latchkey-frontend-deploy, from the repository's folder at start (as
  infra/host/bootstrap.sh does before the first push) and from front-end images after, which the
  front-end SSM document's own script deploys (in the same kind of mount namespace).
- DeployLambda: the deploy function through the Lambda runtime API (`cargo lambda watch` and
  `cargo lambda invoke`), with template.yaml's environment for the function and the invocation
  deadline its Timeout gives (RuntimeApiDeadline: cargo lambda's own is long past).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
REPOSITORY = "latchkey-api"
TAG_KEY = "latchkey-role"
TAG_VALUE = "api"
DOCUMENT = "latchkey-deploy"
# The front-end route: its own repository, document and tag value (infra/environment.yaml's).
FRONTEND_REPOSITORY = "latchkey-frontend"
FRONTEND_TAG_VALUE = "web"
FRONTEND_DOCUMENT = "latchkey-frontend-deploy"
# SSM keeps the first 24,000 characters of standard output and 8,000 of standard error.
STDOUT_LIMIT = 24000
STDERR_LIMIT = 8000


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run(*command: str, env: dict | None = None, cwd: Path = ROOT, timeout: float = 900) -> str:
    """Runs a command, returns its standard output; on failure raises with both streams."""
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}"
        )
    return done.stdout


def wait_for(what: str, seconds: float, check) -> None:
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as error:  # noqa: BLE001 - reported if it never succeeds
            last = error
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {seconds}s (last error: {last!r})")


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class CfnLoader(yaml.SafeLoader):
    """CloudFormation YAML: !Ref, !Sub and the others become {"Fn::...": value} maps."""


def _cfn_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {("Ref" if suffix == "Ref" else "Fn::" + suffix): value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def template() -> dict:
    with open(ROOT / "template.yaml", encoding="utf-8") as handle:
        return yaml.load(handle, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


# ---------------------------------------------------------------------------------------------
# Images and the registry


class Registry:
    """docker-registry on 127.0.0.1, with its storage in `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        (self.port,) = free_ports(1)
        self.host = f"127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.folder}/data\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        log = open(self.folder / "registry.log", "w")  # noqa: SIM115 - kept for the process
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=log
        )
        wait_for("the registry answering", 30, lambda: self._get("/v2/").status == 200)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    MANIFEST_TYPES = ", ".join(
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ]
    )

    def _get(self, path: str, accept: str | None = None):
        request = urllib.request.Request(f"http://{self.host}{path}")
        if accept:
            request.add_header("Accept", accept)
        return urllib.request.urlopen(request, timeout=30)  # noqa: S310 - 127.0.0.1 only

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(manifest bytes, media type, the registry's digest for them)."""
        with self._get(f"/v2/{repository}/manifests/{reference}", self.MANIFEST_TYPES) as reply:
            return (
                reply.read(),
                reply.headers["Content-Type"],
                reply.headers["Docker-Content-Digest"],
            )

    def blob(self, repository: str, digest: str) -> bytes:
        with self._get(f"/v2/{repository}/blobs/{digest}") as reply:
            return reply.read()


def build_images(work: Path, local: str) -> None:
    """local:v1 and local:v2 (the real image, make image), local:never-ready (a stand-in that
    listens and answers 503 forever, tests/deploy/never_ready.c), all FROM scratch."""
    for version in ("v1", "v2"):
        env = dict(os.environ, IMAGE=f"{local}:{version}", VERSION=version)
        run(str(ROOT / "api-container" / "build-image.sh"), env=env, timeout=3000)
    context = work / "never-ready-context"
    context.mkdir(parents=True, exist_ok=True)
    run(
        "musl-gcc", "-static", "-s", "-Os", "-o", str(context / "never-ready"),
        str(ROOT / "tests" / "deploy" / "never_ready.c"),
    )
    shutil.copy(ROOT / "tests" / "deploy" / "never-ready.Dockerfile", context / "Dockerfile")
    run(
        "docker", "build", "--quiet", "-t", f"{local}:never-ready",
        "--build-arg", "MODE=serve", "--build-arg", "VERSION=never-ready", str(context),
    )


def build_frontend_images(work: Path, local: str) -> None:
    """local:v1 and local:v2 (frontend/ with a version marker in index.html), local:broken (no
    index.html: a build that lost its page), with frontend/build-image.sh, FROM scratch."""
    for version in ("v1", "v2", "broken"):
        site = work / f"frontend-{version}"
        shutil.copytree(ROOT / "frontend", site, ignore=shutil.ignore_patterns("deploy"))
        index = site / "public" / "index.html"
        if version == "broken":
            index.unlink()
        else:
            index.write_text(frontend_marked(index.read_text(), version))
        env = dict(os.environ, IMAGE=f"{local}:{version}", VERSION=version, SITE=str(site))
        run(str(ROOT / "frontend" / "build-image.sh"), env=env)


def frontend_marked(index_html: str, version: str) -> str:
    marker = f'<meta name="latchkey-chain-version" content="{version}">'
    assert "<head>" in index_html
    return index_html.replace("<head>", f"<head>\n{marker}", 1)


def frontend_version(index_html: str) -> str | None:
    """The marker frontend_marked put in; None for the repository's own page."""
    found = re.search(r'<meta name="latchkey-chain-version" content="([^"]+)">', index_html)
    return found.group(1) if found else None


def push(local: str, tag: str, registry: Registry, repository: str = REPOSITORY) -> str:
    """docker push local:tag to the registry as repository:tag; returns the digest. The local
    copies are removed: the hosts must pull."""
    remote = f"{registry.host}/{repository}:{tag}"
    run("docker", "tag", f"{local}:{tag}", remote)
    run("docker", "push", "--quiet", remote)
    _, _, digest = registry.manifest(repository, tag)
    run("docker", "image", "rm", remote, f"{local}:{tag}")
    return digest


# ---------------------------------------------------------------------------------------------
# moto: ECR, SSM, EC2


class Moto:
    """moto's server in this process (so that the SSM agent below can reach its records)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = None

    def start(self) -> None:
        import logging

        # Its request log would drown the test's own output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.stop()

    def client(self, service: str):
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        return session.client(service, endpoint_url=self.endpoint)

    def push_to_ecr(
        self, registry: Registry, tag: str, digest: str, repository: str = REPOSITORY
    ) -> dict:
        """What `docker push` does against ECR: every blob through the layer-upload API, then
        PutImage with the manifest, under the registry's own digest."""
        ecr = self.client("ecr")
        manifest, media_type, served = registry.manifest(repository, digest)
        assert served == digest
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest, "the manifest's digest"
        parsed = json.loads(manifest)
        for blob in [parsed["config"], *parsed["layers"]]:
            data = registry.blob(repository, blob["digest"])
            available = ecr.batch_check_layer_availability(
                repositoryName=repository, layerDigests=[blob["digest"]]
            )["layers"]
            if available and available[0].get("layerAvailability") == "AVAILABLE":
                continue
            upload = ecr.initiate_layer_upload(repositoryName=repository)["uploadId"]
            ecr.upload_layer_part(
                repositoryName=repository, uploadId=upload, partFirstByte=0,
                partLastByte=len(data) - 1, layerPartBlob=data,
            )
            done = ecr.complete_layer_upload(
                repositoryName=repository, uploadId=upload, layerDigests=[blob["digest"]]
            )
            assert done["layerDigest"] == blob["digest"], (done, blob)
        return ecr.put_image(
            repositoryName=repository, imageManifest=manifest.decode(),
            imageManifestMediaType=media_type, imageTag=tag, imageDigest=digest,
        )["image"]


# ---------------------------------------------------------------------------------------------
# Hosts and the SSM agent

# The SSM agent runs a document's script as root. scripts/test-chain.sh runs as root, or sets
# LATCHKEY_CHAIN_SUDO="sudo -n" (a GitHub runner: passwordless sudo, not root): then the host
# scripts, and the removal of what they wrote, go through it, the environment passed on with env.
SUDO = os.environ.get("LATCHKEY_CHAIN_SUDO", "").split()


def as_root(argv: list[str], env: dict | None = None) -> list[str]:
    if not SUDO or os.geteuid() == 0:
        return argv
    return [*SUDO, "env", *(f"{k}={v}" for k, v in (env or {}).items()), *argv]


def give_to_root(path: Path) -> None:
    """latchkey-deploy, run as root, refuses an api.env that root does not own."""
    if SUDO and os.geteuid() != 0:
        run(*as_root(["chown", "0:0", str(path)]))


def remove_tree(path: Path) -> None:
    """The run's folder, with what the host scripts wrote as root in it."""
    if SUDO and os.geteuid() != 0:
        subprocess.run(as_root(["rm", "-rf", str(path)]), check=False)
    else:
        shutil.rmtree(path, ignore_errors=True)



class SsmHost:
    """What every host of this test has for the SSM agent: a folder, its own /usr/local/sbin
    (self.sbin), its environment (env()) and the record of the scripts it ran (self.runs)."""

    name: str
    folder: Path
    sbin: Path
    runs: list[dict]

    def env(self) -> dict:
        raise NotImplementedError

    def run_ssm_script(self, command_id: str, script: str, timeout: int) -> tuple[int, str, str, bool]:
        """Runs a runShellScript step as the agent does: the lines in a file of the command's
        own folder, run by sh. /usr/local/sbin is this host's, in a mount namespace of its own."""
        folder = self.folder / "ssm" / command_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "_script.sh"
        path.write_text(script + "\n")
        started = time.monotonic()
        try:
            done = subprocess.run(
                as_root([
                    "unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$1" /usr/local/sbin && exec sh "$2"', "sh",
                    str(self.sbin), str(path),
                ], self.env()),
                cwd=folder, env=self.env(), capture_output=True, text=True,
                timeout=timeout, check=False,
            )
            code, out, err, timed_out = done.returncode, done.stdout, done.stderr, False
        except subprocess.TimeoutExpired as expired:
            code, timed_out = -1, True
            out = (expired.stdout or b"").decode(errors="replace")
            err = (expired.stderr or b"").decode(errors="replace")
        self.runs.append(
            {
                "command_id": command_id, "code": code, "stdout": out, "stderr": err,
                "started": started, "ended": time.monotonic(),
            }
        )
        return code, out, err, timed_out


class Host(SsmHost):
    """One back-end host: nginx on `listen` in front of the blue/green slots, latchkey-deploy
    with its own settings, on this machine's Docker engine."""

    def __init__(self, name: str, folder: Path, api_env: Path, db_ca: Path, run_id: int):
        self.name = name
        self.folder = folder
        self.listen, self.blue, self.green = free_ports(3)
        self.container = f"latchkey-chain-{run_id}-{name}"
        self.conf = folder / "deploy.conf"
        self.nginx = folder / "nginx"
        self.api_env = api_env
        self.db_ca = db_ca
        self.runs: list[dict] = []
        # What the host has at /usr/local/sbin: the repository's deploy script, as install.sh puts it.
        self.sbin = folder / "usr-local-sbin"

    def env(self) -> dict:
        return dict(os.environ, LATCHKEY_DEPLOY_CONF=str(self.conf))

    def setup(self) -> None:
        for sub in ("state", "logs", "nginx/tmp", "ssm"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.sbin.mkdir(exist_ok=True)
        os.symlink(ROOT / "api-container" / "deploy" / "latchkey-deploy", self.sbin / "latchkey-deploy")
        n = self.nginx
        self.conf.write_text(
            f"""# As /etc/latchkey/deploy.conf on a host, with this run's folders, names and ports.
ENV_FILE={self.api_env}
DB_CA_FILE={self.db_ca}
STATE_DIR={self.folder}/state
LOCK_FILE={self.folder}/state/deploy.lock
LOCK_WAIT=120
CONTAINER_NAME={self.container}
LISTEN=127.0.0.1:{self.listen}
BLUE_PORT={self.blue}
GREEN_PORT={self.green}
READY_TIMEOUT=12
DRAIN_TIMEOUT=35
REGISTRY_LOGIN=auto
NGINX_CONF={n}/nginx.conf
NGINX_SITE_FILE={n}/latchkey.conf
NGINX_UPSTREAM_FILE={n}/upstream.conf
NGINX_PID_FILE={n}/nginx.pid
"""
        )
        (n / "nginx.conf").write_text(
            f"""# The host's /etc/nginx/nginx.conf, reduced to what this test needs.
worker_processes 1;
pid {n}/nginx.pid;
error_log {n}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log {n}/access.log;
    client_body_temp_path {n}/tmp/body;
    proxy_temp_path {n}/tmp/proxy;
    fastcgi_temp_path {n}/tmp/fastcgi;
    uwsgi_temp_path {n}/tmp/uwsgi;
    scgi_temp_path {n}/tmp/scgi;
    include {n}/latchkey.conf;
}}
"""
        )
        run(str(ROOT / "api-container" / "deploy" / "latchkey-deploy"), "init", env=self.env())
        run("nginx", "-e", f"{n}/error.log", "-c", f"{n}/nginx.conf")
        wait_for(f"{self.name}'s nginx", 10, lambda: port_answers(self.listen))

    def serving(self) -> list[tuple[str, str, str]]:
        """(container, image reference, version label) of each running container of this host."""
        ids = run("docker", "ps", "-q", "--filter", f"name=^{self.container}-").split()
        found = []
        for cid in ids:
            name, image, version = run(
                "docker", "inspect", "-f",
                '{{.Name}} {{.Config.Image}} {{index .Config.Labels "org.opencontainers.image.version"}}',
                cid,
            ).split()
            found.append((name.lstrip("/"), image, version))
        return found

    def requests_seen(self) -> int:
        log = self.nginx / "access.log"
        return sum(1 for _ in open(log)) if log.exists() else 0

    def stop(self) -> None:
        ids = run("docker", "ps", "-aq", "--filter", f"name=^{self.container}-").split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
        stop_nginx(self.nginx / "nginx.pid")


def stop_nginx(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


class SsmAgent:
    """The part of SSM that moto lacks: delivery to the instances and the agent that runs the
    document there (see the module's docstring)."""

    def __init__(self, moto: Moto, hosts: dict[str, SsmHost]):
        self.moto = moto
        self.hosts = hosts  # instance id -> host
        self.threads: list[threading.Thread] = []
        self.problems: list[str] = []
        self.scripts: dict[str, str] = {}

    def install(self) -> None:
        from moto.ssm.models import SimpleSystemManagerBackend

        original = SimpleSystemManagerBackend.send_command
        agent = self

        def send_command(backend, *args, **kwargs):
            command = original(backend, *args, **kwargs)
            agent.accept(command)
            return command

        SimpleSystemManagerBackend.send_command = send_command

    def accept(self, command) -> None:
        # Before SendCommand answers: every invocation waits its turn, as on AWS.
        command.invocations.sort(key=lambda i: i["InstanceId"])
        for invocation in command.invocations:
            invocation.update(
                Status="Pending", StatusDetails="Pending", ResponseCode=-1,
                ExecutionStartDateTime="", ExecutionEndDateTime="", ExecutionElapsedTime="",
            )
        command.status = command.status_details = "Pending"
        command.completed_count = 0
        thread = threading.Thread(target=self._run, args=(command,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _script(self, command) -> tuple[str, int]:
        """The document's runShellScript lines with the parameters substituted, after SSM's
        own check of each against its allowedPattern."""
        ssm = self.moto.client("ssm")
        content = json.loads(
            ssm.get_document(Name=command.document_name, DocumentFormat="JSON")["Content"]
        )
        declared = content.get("parameters", {})
        given = command.parameters or {}
        unknown = set(given) - set(declared)
        if unknown:
            raise ValueError(f"InvalidParameters: {sorted(unknown)} not in the document")
        values = {}
        for name, spec in declared.items():
            value = given.get(name, [spec.get("default")])
            if len(value) != 1 or value[0] is None:
                raise ValueError(f"InvalidParameters: {name} needs one value, got {value}")
            pattern = spec.get("allowedPattern")
            if pattern and not re.search(pattern, value[0]):
                raise ValueError(f"InvalidParameters: {name}={value[0]!r} fails {pattern}")
            values[name] = value[0]
        steps = content["mainSteps"]
        if [s["action"] for s in steps] != ["aws:runShellScript"]:
            raise ValueError(f"only one aws:runShellScript step is emulated, not {steps}")
        lines = steps[0]["inputs"]["runCommand"]
        script = "\n".join(lines)
        for name, value in values.items():
            script = re.sub(r"\{\{\s*" + re.escape(name) + r"\s*\}\}", lambda _m, v=value: v, script)
        return script, int(steps[0]["inputs"].get("timeoutSeconds", 3600))

    def _run(self, command) -> None:
        try:
            if (command.max_concurrency, command.max_errors) != ("1", "0"):
                raise ValueError(
                    f"MaxConcurrency {command.max_concurrency!r} / MaxErrors {command.max_errors!r}:"
                    " only 1 and 0 (one at a time, stop at the first error) are emulated"
                )
            script, timeout = self._script(command)
            self.scripts[command.command_id] = script
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.problems.append(f"{command.command_id}: {error}")
            for invocation in command.invocations:
                invocation.update(Status="Failed", StatusDetails="Failed", StandardErrorContent=str(error))
            command.status = command.status_details = "Failed"
            return
        command.status = command.status_details = "InProgress"
        errors = 0
        for invocation in command.invocations:
            if errors > 0:
                # MaxErrors 0 reached: SSM sends no further invocation.
                invocation.update(Status="Cancelled", StatusDetails="Terminated")
                continue
            host = self.hosts.get(invocation["InstanceId"])
            if host is None:
                self.problems.append(f"the command reached {invocation['InstanceId']}, which is no host of this test")
                invocation.update(Status="Failed", StatusDetails="Undeliverable")
                errors += 1
                continue
            began = datetime.now(timezone.utc)
            invocation.update(Status="InProgress", StatusDetails="InProgress", ExecutionStartDateTime=began.isoformat())
            code, out, err, timed_out = host.run_ssm_script(command.command_id, script, timeout)
            ended = datetime.now(timezone.utc)
            if timed_out:
                status, details = "TimedOut", "ExecutionTimedOut"
            elif code == 0:
                status, details = "Success", "Success"
            else:
                status, details = "Failed", "Failed"
            invocation.update(
                Status=status, StatusDetails=details, ResponseCode=code,
                StandardOutputContent=out[:STDOUT_LIMIT], StandardErrorContent=err[:STDERR_LIMIT],
                ExecutionEndDateTime=ended.isoformat(),
                ExecutionElapsedTime=f"PT{(ended - began).total_seconds():.3f}S",
            )
            command.completed_count += 1
            if status != "Success":
                errors += 1
                command.error_count += 1
        command.status = command.status_details = "Success" if errors == 0 else "Failed"


# ---------------------------------------------------------------------------------------------
# The front-end and the Lambda


class Frontend(SsmHost):
    """The front-end host: nginx with nothing but its main file, and the site (frontend/nginx.conf
    and frontend/public) put in place by frontend/deploy/latchkey-frontend-deploy, first from the
    repository's frontend/ folder (`site`, as infra/host/bootstrap.sh does before the first image
    push), then from front-end images through the front-end SSM document. One `server` line per
    back-end, as on AWS."""

    def __init__(self, folder: Path, backends: list[str]):
        self.name = "frontend"
        self.folder = folder
        self.port, self.check_port = free_ports(2)
        self.backends = backends
        self.runs: list[dict] = []
        self.sbin = folder / "usr-local-sbin"
        self.conf = folder / "frontend.conf"
        self.nginx = folder / "nginx"

    def env(self) -> dict:
        return dict(os.environ, LATCHKEY_FRONTEND_CONF=str(self.conf))

    def start(self) -> None:
        n = self.nginx
        for sub in ("tmp", "conf.d"):
            (n / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "ssm").mkdir(exist_ok=True)
        self.sbin.mkdir(exist_ok=True)
        os.symlink(
            ROOT / "frontend" / "deploy" / "latchkey-frontend-deploy",
            self.sbin / "latchkey-frontend-deploy",
        )
        # As /etc/latchkey/frontend.conf (bootstrap.sh writes BACKENDS and LISTEN), with this
        # run's folders and ports.
        self.conf.write_text(
            f"""BACKENDS={",".join(self.backends)}
LISTEN=127.0.0.1:{self.port}
CHECK_PORT={self.check_port}
CHECK_TIMEOUT=10
STATE_DIR={self.folder}/state
LOCK_WAIT=120
NGINX_CONF={n}/nginx.conf
NGINX_SITE_FILE={n}/conf.d/latchkey.conf
NGINX_PID_FILE={n}/nginx.pid
"""
        )
        (n / "nginx.conf").write_text(
            f"""# The host's /etc/nginx/nginx.conf (bootstrap.sh's), reduced to what this test needs.
worker_processes 1;
pid {n}/nginx.pid;
error_log {n}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {n}/tmp/body;
    proxy_temp_path {n}/tmp/proxy;
    fastcgi_temp_path {n}/tmp/fastcgi;
    uwsgi_temp_path {n}/tmp/uwsgi;
    scgi_temp_path {n}/tmp/scgi;
    include {n}/conf.d/*.conf;
}}
"""
        )
        run("nginx", "-e", f"{n}/error.log", "-c", f"{n}/nginx.conf")
        out = run(
            str(self.sbin / "latchkey-frontend-deploy"), "site", str(ROOT / "frontend"),
            env=self.env(),
        )
        assert "serves on" in out, out
        wait_for("the front-end's nginx", 10, lambda: port_answers(self.port))

    def index(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=10) as reply:  # noqa: S310
            return reply.read().decode()

    def status(self) -> dict:
        out = run(str(self.sbin / "latchkey-frontend-deploy"), "status", env=self.env())
        return dict(
            (line.split(":", 1)[0], line.split(":", 1)[1].strip()) for line in out.splitlines()
        )

    def stop(self) -> None:
        stop_nginx(self.nginx / "nginx.pid")


class RuntimeApiDeadline:
    """The Lambda runtime API as the function sees it: `cargo lambda watch`'s, with the
    invocation's deadline that Lambda would send.

    cargo lambda watch (1.9.2) answers every /invocation/next with the fixed header
    `Lambda-Runtime-Deadline-Ms: 600000`, i.e. ten minutes after the Unix epoch, a deadline long
    past; its --timeout only bounds how long the invoke request waits. A function that honours
    its deadline (the deploy function does, DEADLINE_MARGIN before it) would stop waiting at once.
    This proxy forwards every runtime API call to cargo lambda and replaces that header with what
    Lambda sends: the moment the event is handed out plus the function's timeout."""

    def __init__(self, upstream_port: int, prefix: str, timeout: int):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self
        self.timeout = timeout
        self.deadlines: list[int] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):
                pass

            def _forward(self):
                import http.client

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection", "content-length")
                }
                connection = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=None)
                try:
                    connection.request(self.command, prefix + self.path, body=body, headers=headers)
                    reply = connection.getresponse()
                    data = reply.read()
                    handed_out = time.time()
                    self.send_response(reply.status)
                    for key, value in reply.getheaders():
                        lower = key.lower()
                        if lower in ("content-length", "connection", "transfer-encoding"):
                            continue
                        if lower == "lambda-runtime-deadline-ms":
                            value = str(int((handed_out + proxy.timeout) * 1000))
                            proxy.deadlines.append(int(value))
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    # cargo lambda watch or the function stopped (the end of the test).
                    self.close_connection = True
                finally:
                    connection.close()

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DeployLambda:
    """The deploy function behind the Lambda runtime API of `cargo lambda watch`
    (--only-lambda-apis), invoked with `cargo lambda invoke`. The function's binary (built by
    scripts/test-chain.sh) runs as Lambda runs a provided.al2023 bootstrap, with
    AWS_LAMBDA_RUNTIME_API pointing at RuntimeApiDeadline (see there why)."""

    def __init__(self, folder: Path, moto: Moto, registry: Registry):
        self.folder = folder
        (self.port,) = free_ports(1)
        self.process = None
        self.function = None
        self.runtime_api = None
        properties = template()["Resources"]["DeployFunction"]["Properties"]
        self.timeout = int(properties["Timeout"])
        self.memory = int(properties.get("MemorySize", 128))
        variables = properties["Environment"]["Variables"]
        # template.yaml's settings for the function; what CloudFormation fills in from the stack
        # (!Ref, !Sub) is this run's: the local registry, the document's name, the default tag.
        fixed = {k: v for k, v in variables.items() if isinstance(v, str)}
        self.env = {
            **fixed,
            "DEPLOY_REPOSITORY": REPOSITORY,
            "DEPLOY_REGISTRY": registry.host,
            "DEPLOY_TAG_PATTERN": "*",
            "DEPLOY_TARGET_TAG_KEY": TAG_KEY,
            "DEPLOY_TARGET_TAG_VALUE": TAG_VALUE,
            "DEPLOY_DOCUMENT": DOCUMENT,
            "DEPLOY_FRONTEND_REPOSITORY": FRONTEND_REPOSITORY,
            "DEPLOY_FRONTEND_DOCUMENT": FRONTEND_DOCUMENT,
            "DEPLOY_FRONTEND_TARGET_TAG_VALUE": FRONTEND_TAG_VALUE,
            # Bounded for a test: a stuck chain fails in minutes, not in 885 s.
            "DEPLOY_WAIT_TIMEOUT_SECS": "240",
            "AWS_ENDPOINT_URL": moto.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "LOG_FORMAT": "json",
        }
        unresolved = set(variables) - set(self.env)
        assert not unresolved, f"template.yaml sets {unresolved}, which this test does not"

    @staticmethod
    def binary() -> Path:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
        if not target.is_absolute():
            target = ROOT / target
        return target / "debug" / "deploy"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        binary = self.binary()
        assert binary.exists(), f"{binary}: build it first (cargo build -p deploy --bins)"
        log = open(self.folder / "watch.log", "w")  # noqa: SIM115 - kept for the process
        self.process = subprocess.Popen(
            [
                "cargo", "lambda", "watch", "--only-lambda-apis",
                "--invoke-address", "127.0.0.1", "--invoke-port", str(self.port),
                # How long `cargo lambda invoke` waits for the answer: the function's timeout.
                "--timeout", str(self.timeout),
            ],
            cwd=ROOT, stdout=log, stderr=log, start_new_session=True,
        )
        wait_for("cargo lambda watch listening", 60, lambda: port_answers(self.port))
        self.runtime_api = RuntimeApiDeadline(self.port, "/.rt", self.timeout)
        self.runtime_api.start()
        function_log = open(self.folder / "function.log", "w")  # noqa: SIM115
        self.function = subprocess.Popen(
            [str(binary)],
            cwd=self.folder, stdout=function_log, stderr=subprocess.STDOUT,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                **self.env,
                "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.runtime_api.port}",
                "AWS_LAMBDA_FUNCTION_NAME": "deploy",
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory),
            },
            start_new_session=True,
        )
        time.sleep(1)
        assert self.function.poll() is None, self.log()

    def log(self) -> str:
        text = ""
        for name in ("watch.log", "function.log"):
            path = self.folder / name
            if path.exists():
                text += f"--- {name}\n" + path.read_text(errors="replace")
        return text

    def last_error(self) -> str:
        """The error of the function's last failed invocation, as its log has it (the same text
        as the invocation's errorMessage, which `cargo lambda invoke` prints wrapped at 80
        columns, splitting instance ids and image references across lines)."""
        found = ""
        for line in (self.folder / "function.log").read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "deploy did not happen":
                found = f"{record.get('error_type')}: {record.get('error')}"
        return found

    def invoke(self, event: dict, name: str) -> subprocess.CompletedProcess:
        assert self.function.poll() is None, f"the function exited {self.function.returncode}\n{self.log()}"
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(event))
        # No function name: with --only-lambda-apis the runtime API's bare routes (the ones a
        # bootstrap polls) serve the default function.
        return subprocess.run(
            [
                "cargo", "lambda", "invoke", "--invoke-address", "127.0.0.1",
                "--invoke-port", str(self.port), "--data-file", str(path), "--output-format", "json",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        )

    def stop(self) -> None:
        for process in (self.function, self.process):
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        if self.runtime_api:
            self.runtime_api.stop()


def push_event(tag: str, digest: str, repository: str = REPOSITORY) -> dict:
    """events/ecr-push.json with this push's repository, tag and real digest."""
    event = json.loads((ROOT / "events" / "ecr-push.json").read_text())
    event["id"] = base64.b16encode(os.urandom(16)).decode().lower()
    event["time"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["detail"].update({"repository-name": repository, "image-tag": tag, "image-digest": digest})
    return event


class Load:
    """tests/deploy/load.py through the front-end's nginx."""

    def __init__(self, folder: Path, port: int, label: str, pages: bool = False):
        self.folder = folder
        self.port = port
        self.label = label
        self.pages = pages
        self.stop_file = folder / f"load-{label}.stop"
        self.ready_file = folder / f"load-{label}.ready"
        self.out = folder / f"load-{label}.json"
        self.process = None

    def start(self) -> None:
        log = open(self.folder / f"load-{self.label}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                "python3", str(ROOT / "tests" / "deploy" / "load.py"), "--port", str(self.port),
                "--rate", "40", "--workers", "4", "--max-seconds", "300",
                "--stop-file", str(self.stop_file), "--ready-file", str(self.ready_file),
                "--out", str(self.out), *(["--pages"] if self.pages else []),
            ],
            stdout=log, stderr=log,
        )
        wait_for("20 answers to the load", 40, lambda: self.ready_file.exists() or self.process.poll() is not None)
        assert self.process.poll() is None, (self.folder / f"load-{self.label}.log").read_text()

    def finish(self) -> dict:
        # Requests keep coming after the deploy returned: the new slots take them too.
        time.sleep(2)
        self.stop_file.touch()
        self.process.wait(timeout=30)
        return json.loads(self.out.read_text())

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
