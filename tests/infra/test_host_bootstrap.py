"""The hosts set themselves up: infra/host/bootstrap.sh and api-container/deploy/install.sh, the
real scripts, run from a copy of the host bundle (as scripts/deploy-aws.sh packs it) on a fresh
"host" of each supported distribution.

The host is a folder (LATCHKEY_ROOT: every path the scripts write lands under it) and a PATH
holding the basic tools (bash, coreutils, sed, python3, openssl) plus stand-ins for what a real
host would change or reach: apt-get, apt-cache, dnf, snap, curl, unzip, Docker, nginx, systemctl,
the AWS CLI (Secrets Manager, ECR) and the deploy scripts the bootstrap runs. Each stand-in
records its command line; a package manager's "install" puts the package's commands on the PATH,
so what the scripts find afterwards follows from what they asked for. The tests then read the
files the scripts wrote and the commands they issued.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

REGION = "eu-west-1"
REGISTRY = f"123456789012.dkr.ecr.{REGION}.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32
DB_SECRET = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:DatabaseSecret-AbCdEf"
KEY_SECRET = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:KeyEncryptionSecret-GhIjKl"
MAIL_SECRET = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:MailSmtpSecret-MnOpQr"
# A password with characters a URL must escape (Secrets Manager's generator excludes punctuation,
# but an operator may set one by hand).
DB_JSON = {"username": "latchkey", "password": "p@ss/w:rd"}
KEY_SEED = "k" * 64
MAIL_JSON = {
    "access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "smtp_host": f"email-smtp.{REGION}.amazonaws.com",
    "mail_domain": "example.com",
}
# ip-ranges.json as AWS publishes it: only CLOUDFRONT_ORIGIN_FACING may be believed (CLOUDFRONT's
# edge ranges and EC2's are anyone's).
IP_RANGES = {
    "syncToken": "1", "createDate": "2026-12-01-00-00-00",
    "prefixes": [
        {"ip_prefix": "130.176.0.0/18", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING"},
        {"ip_prefix": "64.252.64.0/18", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING"},
        {"ip_prefix": "130.176.0.0/18", "region": "GLOBAL", "service": "AMAZON"},
        {"ip_prefix": "205.251.192.0/19", "region": "GLOBAL", "service": "CLOUDFRONT"},
        {"ip_prefix": "3.248.0.0/13", "region": "eu-west-1", "service": "EC2"},
    ],
    "ipv6_prefixes": [
        {"ipv6_prefix": "2600:9000:1000::/36", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING"},
        {"ipv6_prefix": "2600:9000:2000::/36", "region": "GLOBAL", "service": "CLOUDFRONT"},
    ],
}

# What each distribution has before the scripts run, and which package gives which command.
DISTROS = {
    "amazon-linux-2023": {"manager": "dnf"},
    "debian-12": {"manager": "apt-get", "apt_awscli": True},
    "ubuntu-24.04": {"manager": "apt-get", "apt_awscli": False, "snap": True},
    "ubuntu-24.04-without-snap": {"manager": "apt-get", "apt_awscli": False},
}
PROVIDES = {
    # apt
    "docker.io": ["docker"], "nginx": ["nginx"], "curl": ["curl"], "util-linux": ["flock"],
    "procps": ["pgrep"], "awscli": ["aws"], "unzip": ["unzip"],
    # dnf (Amazon Linux 2023's names)
    "docker": ["docker"], "curl-minimal": ["curl"], "procps-ng": ["pgrep"], "awscli-2": ["aws"],
}
# Real tools every distribution has (and the scripts may use as they are).
BASE_TOOLS = [
    "bash", "sh", "env", "cat", "sed", "grep", "mkdir", "install", "chmod", "mv", "rm", "cp", "ln",
    "mktemp", "dirname", "basename", "id", "tr", "stat", "uname", "python3", "openssl", "head",
    "tail", "sort", "cut", "readlink", "touch", "date", "sleep", "awk", "seq", "tee", "wc",
]

STUB = r"""#!/bin/bash
# A stand-in: records its command line, then does what the test needs of it.
name=${0##*/}
{ printf '%s' "$name"; printf ' %q' "$@"; printf '\n'; } >>"$STUB_LOG"
bin=${0%/*}
provide() { local c; for c in "$@"; do ln -sf stub "$bin/$c"; done; }
words=()
skip=false
for a in "$@"; do
  if $skip; then skip=false; continue; fi
  case $a in -o | -d) [ "$name" = apt-get ] && skip=true; continue ;; -*) continue ;; esac
  words+=("$a")
done
case $name in
apt-get | dnf)
  if [ "${words[0]:-}" = install ]; then
    for p in "${words[@]:1}"; do
      case $p in
      docker.io | docker) provide docker ;; nginx) provide nginx ;; curl | curl-minimal) provide curl ;;
      util-linux) provide flock ;; procps | procps-ng) provide pgrep ;; awscli | awscli-2) provide aws ;;
      unzip) provide unzip ;; python3 | openssl) ;;
      *) echo "stub $name: no package $p" >&2; exit 100 ;;
      esac
    done
  fi
  ;;
apt-cache) [ "${words[0]:-}" = show ] && [ "${words[1]:-}" = awscli ] && [ -n "${STUB_APT_AWSCLI:-}" ] || exit 100 ;;
snap) [ "${words[0]:-}" = install ] && [ "${words[1]:-}" = aws-cli ] && provide aws ;;
curl)
  out="" url=""
  while [ $# -gt 0 ]; do case $1 in -o) out=$2; shift 2 ;; --max-time | --retry) shift 2 ;; -*) shift ;; *) url=$1; shift ;; esac; done
  case $url in
  https://ip-ranges.amazonaws.com/ip-ranges.json) [ -n "${STUB_IP_RANGES:-}" ] || exit 22; cp "$STUB_IP_RANGES" "$out" ;;
  https://awscli.amazonaws.com/awscli-exe-linux-*.zip) echo "not really a zip" >"$out" ;;
  *) exit 22 ;;
  esac
  ;;
unzip)
  dest=${words[1]}
  mkdir -p "$dest/aws"
  provide aws-installer
  printf '#!/bin/bash\nexec %q "$@"\n' "$bin/aws-installer" >"$dest/aws/install"
  chmod +x "$dest/aws/install"
  ;;
aws-installer) provide aws ;;
systemctl) [ "${words[0]:-}" = is-active ] && exit 3 ;;
aws)
  case "${words[0]:-} ${words[1]:-}" in
  "secretsmanager get-secret-value")
    id=""
    while [ $# -gt 0 ]; do case $1 in --secret-id) id=$2; shift 2 ;; *) shift ;; esac; done
    f="$STUB_SECRETS/${id##*:}"
    [ -f "$f" ] || { echo "stub aws: no secret $id" >&2; exit 254; }
    cat "$f"; echo
    ;;
  "ecr describe-images") echo "${STUB_DIGEST:-None}" ;;
  *) echo "stub aws: unexpected $*" >&2; exit 254 ;;
  esac
  ;;
esac
exit 0
"""


class Host:
    """A fresh host of one distribution: its root folder, its PATH and the stand-ins' record."""

    def __init__(self, folder: Path, distro: str, digest: str | None = None):
        spec = DISTROS[distro]
        self.root = folder / "root"
        self.bin = folder / "bin"
        self.bundle = folder / "opt-latchkey"
        self.log = folder / "commands.log"
        self.secrets = folder / "secrets"
        for d in (self.root, self.bin, self.secrets):
            d.mkdir(parents=True)
        self.log.touch()
        (self.bin / "stub").write_text(STUB)
        (self.bin / "stub").chmod(0o755)
        for tool in BASE_TOOLS:
            found = shutil.which(tool)
            assert found, f"this machine has no {tool}"
            os.symlink(found, self.bin / tool)
        for command in [spec["manager"], "systemctl", "latchkey-deploy", "latchkey-frontend-deploy"]:
            os.symlink("stub", self.bin / command)
        if spec["manager"] == "apt-get":
            os.symlink("stub", self.bin / "apt-cache")
        if spec.get("snap"):
            os.symlink("stub", self.bin / "snap")
        # The host bundle, as scripts/deploy-aws.sh packs it (git ls-files of these, and rds-ca.pem).
        for part in ("api-container/deploy", "frontend/public", "frontend/deploy", "infra/host"):
            shutil.copytree(ROOT / part, self.bundle / part)
        shutil.copy(ROOT / "frontend" / "nginx.conf", self.bundle / "frontend" / "nginx.conf")
        (self.bundle / "rds-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nRDS\n-----END CERTIFICATE-----\n")
        for arn, value in ((DB_SECRET, json.dumps(DB_JSON)), (KEY_SECRET, KEY_SEED), (MAIL_SECRET, json.dumps(MAIL_JSON))):
            (self.secrets / arn.rsplit(":", 1)[-1]).write_text(value)
        (folder / "ip-ranges.json").write_text(json.dumps(IP_RANGES))
        self.env = {
            "PATH": str(self.bin),
            "HOME": str(folder),
            "TMPDIR": str(folder),
            "LANG": "C.UTF-8",
            "LATCHKEY_ROOT": str(self.root),
            "LATCHKEY_SBIN": str(self.bin),
            "STUB_LOG": str(self.log),
            "STUB_SECRETS": str(self.secrets),
            "STUB_IP_RANGES": str(folder / "ip-ranges.json"),
            "STUB_APT_AWSCLI": "yes" if spec.get("apt_awscli") else "",
        }
        if digest:
            self.env["STUB_DIGEST"] = digest

    def bootstrap(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.bin / "bash"), str(self.bundle / "infra" / "host" / "bootstrap.sh"), *args],
            env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )
        if check:
            assert done.returncode == 0, f"bootstrap.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def commands(self, name: str | None = None) -> list[list[str]]:
        lines = [shlex.split(line) for line in self.log.read_text().splitlines() if line]
        return [line for line in lines if name is None or line[0] == name]

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")


def backend_args(mail: bool = False) -> list[str]:
    args = [
        "backend", "--region", REGION, "--issuer", "https://d111111abcdef8.cloudfront.net",
        "--trusted-proxies", "127.0.0.1/32,10.0.0.0/16", "--db-host", "db.abc.eu-west-1.rds.amazonaws.com",
        "--db-port", "5432", "--db-secret", DB_SECRET, "--key-secret", KEY_SECRET,
        "--repository", "latchkey-api", "--registry", REGISTRY,
    ]
    if mail:
        args += ["--mail-secret", MAIL_SECRET, "--mail-from", "Latchkey <no-reply@example.com>"]
    return args


FRONTEND_ARGS = [
    "frontend", "--backends", "10.0.2.10:8080,10.0.3.10:8080", "--region", REGION,
    "--repository", "latchkey-frontend", "--registry", REGISTRY,
]


def env_file(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def installed(host: Host) -> list[str]:
    """The packages the package managers were asked to install, in order."""
    packages = []
    for line in host.commands("apt-get") + host.commands("dnf"):
        words = [w for w in line[1:] if not w.startswith("-") and "::" not in w]
        if words and words[0] == "install":
            packages += words[1:]
    return packages


# ---------------------------------------------------------------------------------------------
# The back-end


def test_a_back_end_on_amazon_linux_2023_installs_what_it_needs_with_dnf(tmp_path):
    host = Host(tmp_path, "amazon-linux-2023", digest=DIGEST)
    host.bootstrap(*backend_args())
    assert set(installed(host)) == {"docker", "nginx", "curl-minimal", "util-linux", "procps-ng", "awscli-2"}
    assert not host.commands("apt-get")
    assert ["systemctl", "enable", "--now", "docker"] in host.commands("systemctl")
    assert ["systemctl", "enable", "nginx"] in host.commands("systemctl")


def test_a_back_end_writes_api_env_from_the_stack_and_its_secrets_readable_by_root_only(tmp_path):
    host = Host(tmp_path, "amazon-linux-2023", digest=DIGEST)
    host.bootstrap(*backend_args())
    api_env = host.path("/etc/latchkey/api.env")
    assert mode(api_env) == 0o600
    assert mode(host.path("/etc/latchkey")) == 0o700
    env = env_file(api_env)
    assert env["DATABASE_URL"] == (
        "postgres://latchkey:p%40ss%2Fw%3Ard@db.abc.eu-west-1.rds.amazonaws.com:5432/latchkey?sslmode=verify-full"
    )
    assert env["AUTH_KEY_ENCRYPTION_KEY"] == base64.b64encode(hashlib.sha256(KEY_SEED.encode()).digest()).decode()
    assert env["AUTH_ISSUER"] == "https://d111111abcdef8.cloudfront.net"
    assert env["AUTH_TRUSTED_PROXIES"] == "127.0.0.1/32,10.0.0.0/16"
    assert env["AUTH_COOKIE_SECURE"] == "true"
    # Without --mail-secret: no mail settings (the service logs mail instead).
    assert "SMTP_URL" not in env and "MAIL_FROM" not in env
    # The secrets were read with the instance role, by id.
    read = [c[c.index("--secret-id") + 1] for c in host.commands("aws") if "get-secret-value" in c]
    assert read == [DB_SECRET, KEY_SECRET]


def test_a_back_end_verifies_the_database_against_the_bundled_rds_ca(tmp_path):
    host = Host(tmp_path, "amazon-linux-2023", digest=DIGEST)
    host.bootstrap(*backend_args())
    ca = host.path("/usr/local/share/latchkey/rds-ca.pem")
    assert ca.read_text() == (host.bundle / "rds-ca.pem").read_text()
    assert mode(ca) == 0o644  # the container's user reads it through a read-only mount
    conf = env_file(host.path("/etc/latchkey/deploy.conf"))
    assert conf["DB_CA_FILE"] == str(ca)
    assert env_file(host.path("/etc/latchkey/api.env"))["DATABASE_URL"].endswith("sslmode=verify-full")


def test_a_back_end_installs_latchkey_deploy_and_starts_the_newest_image(tmp_path):
    host = Host(tmp_path, "amazon-linux-2023", digest=DIGEST)
    host.bootstrap(*backend_args())
    script = host.path("/usr/local/sbin/latchkey-deploy")
    assert script.read_bytes() == (ROOT / "api-container" / "deploy" / "latchkey-deploy").read_bytes()
    assert mode(script) == 0o755
    assert host.commands("latchkey-deploy") == [
        ["latchkey-deploy", "init"],
        ["latchkey-deploy", "deploy", f"{REGISTRY}/latchkey-api@{DIGEST}"],
    ]
    daemon = json.loads(host.path("/etc/docker/daemon.json").read_text())
    assert daemon["live-restore"] is True and daemon["log-opts"]["max-size"]


def test_a_back_end_without_an_image_yet_waits_for_the_first_push(tmp_path):
    host = Host(tmp_path, "amazon-linux-2023")
    done = host.bootstrap(*backend_args())
    assert host.commands("latchkey-deploy") == [["latchkey-deploy", "init"]]
    assert "the first push deploys" in done.stdout


def test_a_back_end_with_mail_gets_the_ses_smtp_url_derived_from_the_secret_key(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "infra" / "host"))
    import ses_smtp

    host = Host(tmp_path, "debian-12", digest=DIGEST)
    host.bootstrap(*backend_args(mail=True))
    env = env_file(host.path("/etc/latchkey/api.env"))
    password = ses_smtp.smtp_password(MAIL_JSON["secret_access_key"], REGION)
    assert password != MAIL_JSON["secret_access_key"]
    from urllib.parse import quote, urlsplit, unquote

    url = urlsplit(env["SMTP_URL"])
    assert (url.scheme, url.hostname, url.port) == ("smtps", f"email-smtp.{REGION}.amazonaws.com", 465)
    assert unquote(url.username) == MAIL_JSON["access_key_id"]
    assert unquote(url.password) == password and quote(password, safe="") in env["SMTP_URL"]
    assert env["MAIL_FROM"] == "Latchkey <no-reply@example.com>"
    assert mode(host.path("/etc/latchkey/api.env")) == 0o600


def test_a_back_end_runs_again_with_its_saved_arguments_and_writes_the_same(tmp_path):
    host = Host(tmp_path, "debian-12", digest=DIGEST)
    host.bootstrap(*backend_args(mail=True))
    first = host.path("/etc/latchkey/api.env").read_text()
    assert mode(host.path("/etc/latchkey/backend.bootstrap-args")) == 0o600
    host.log.write_text("")
    host.bootstrap("backend", "--saved")
    assert host.path("/etc/latchkey/api.env").read_text() == first
    # Already installed: nothing is installed twice, settings are not overwritten.
    assert installed(host) == []


def test_mail_from_without_the_mail_secret_is_refused(tmp_path):
    host = Host(tmp_path, "debian-12")
    done = host.bootstrap(*backend_args(), "--mail-from", "no-reply@example.com", check=False)
    assert done.returncode != 0 and "--mail-secret and --mail-from go together" in done.stderr


# ---------------------------------------------------------------------------------------------
# The AWS CLI on every supported distribution


def test_debian_gets_the_aws_cli_from_its_archive(tmp_path):
    host = Host(tmp_path, "debian-12")
    host.bootstrap(*backend_args())
    assert set(installed(host)) == {"docker.io", "nginx", "curl", "util-linux", "procps", "awscli"}
    assert not (host.bin / "snap").exists()
    assert (host.bin / "aws").exists()


def test_ubuntu_without_awscli_in_its_archive_gets_the_snap(tmp_path):
    host = Host(tmp_path, "ubuntu-24.04")
    host.bootstrap(*backend_args())
    assert "awscli" not in installed(host)
    assert set(installed(host)) == {"docker.io", "nginx", "curl", "util-linux", "procps"}
    assert host.commands("snap") == [["snap", "install", "aws-cli", "--classic"]]
    assert not host.commands("unzip")


def test_ubuntu_without_snap_gets_aws_s_own_installer(tmp_path):
    host = Host(tmp_path, "ubuntu-24.04-without-snap")
    host.bootstrap(*backend_args())
    assert "unzip" in installed(host)
    [download] = [c for c in host.commands("curl") if any("awscli.amazonaws.com" in w for w in c)]
    assert download[-1].startswith("https://awscli.amazonaws.com/awscli-exe-linux-")
    assert host.commands("aws-installer") == [["aws-installer", "--update"]]
    # With the AWS CLI in place, the rest went on: the secrets were read.
    assert host.path("/etc/latchkey/api.env").exists()


# ---------------------------------------------------------------------------------------------
# The front-end


def test_the_front_end_believes_x_forwarded_for_from_cloudfront_s_origin_facing_ranges_only(tmp_path):
    host = Host(tmp_path, "amazon-linux-2023")
    host.bootstrap(*FRONTEND_ARGS)
    realip = host.path("/etc/nginx/conf.d/00-cloudfront-realip.conf").read_text().splitlines()
    trusted = [line for line in realip if line.startswith("set_real_ip_from")]
    assert trusted == [
        "set_real_ip_from 130.176.0.0/18;",
        "set_real_ip_from 64.252.64.0/18;",
        "set_real_ip_from 2600:9000:1000::/36;",
    ]
    assert "real_ip_header X-Forwarded-For;" in realip
    assert "real_ip_recursive on;" in realip
    # The main file includes conf.d, where both the ranges and the site live.
    main = host.path("/etc/nginx/nginx.conf").read_text()
    assert "include /etc/nginx/conf.d/*.conf;" in main
    assert ["nginx", "-t"] in host.commands("nginx")


def test_the_front_end_keeps_its_ranges_when_they_cannot_be_fetched(tmp_path):
    host = Host(tmp_path, "amazon-linux-2023")
    host.bootstrap(*FRONTEND_ARGS)
    ranges = host.path("/etc/nginx/conf.d/00-cloudfront-realip.conf")
    before = ranges.read_text()
    host.env["STUB_IP_RANGES"] = ""
    done = host.bootstrap("frontend", "--saved")
    assert "could not fetch CloudFront's address ranges" in done.stdout
    assert ranges.read_text() == before
    assert not list(ranges.parent.glob("*.new"))


def test_the_front_end_proxies_to_every_back_end_and_serves_the_site(tmp_path):
    host = Host(tmp_path, "ubuntu-24.04")
    host.bootstrap(*FRONTEND_ARGS)
    conf = env_file(host.path("/etc/latchkey/frontend.conf"))
    assert conf == {"BACKENDS": "10.0.2.10:8080,10.0.3.10:8080", "LISTEN": "80"}
    script = host.path("/usr/local/sbin/latchkey-frontend-deploy")
    assert script.read_bytes() == (ROOT / "frontend" / "deploy" / "latchkey-frontend-deploy").read_bytes()
    # No image yet: the bundle's site.
    assert host.commands("latchkey-frontend-deploy") == [["latchkey-frontend-deploy", "site", str(host.bundle / "frontend")]]
    # Packages only on the front-end: no back-end deploy script, no api.env.
    assert not host.path("/usr/local/sbin/latchkey-deploy").exists()
    assert not host.path("/etc/latchkey/api.env").exists()
    assert host.commands("snap") == [["snap", "install", "aws-cli", "--classic"]]
    # The daily refresh of CloudFront's ranges: a systemd timer (Amazon Linux 2023 has no cron).
    service = host.path("/etc/systemd/system/latchkey-frontend-refresh.service").read_text()
    assert f"ExecStart={host.bundle}/infra/host/bootstrap.sh frontend --saved" in service
    assert "OnCalendar=" in host.path("/etc/systemd/system/latchkey-frontend-refresh.timer").read_text()
    assert ["systemctl", "enable", "--now", "latchkey-frontend-refresh.timer"] in host.commands("systemctl")


def test_the_front_end_serves_the_newest_image_and_runs_again_from_its_saved_arguments(tmp_path):
    host = Host(tmp_path, "amazon-linux-2023", digest=DIGEST)
    host.bootstrap(*FRONTEND_ARGS)
    host.bootstrap("frontend", "--saved")
    assert host.commands("latchkey-frontend-deploy") == [
        ["latchkey-frontend-deploy", "deploy", f"{REGISTRY}/latchkey-frontend@{DIGEST}"],
    ] * 2


@pytest.mark.skipif(not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="no nginx on this machine")
def test_nginx_accepts_the_real_ip_settings_with_the_site(tmp_path):
    """The written ranges and frontend/nginx.conf (rendered as latchkey-frontend-deploy does) in
    one http context, checked by the real nginx."""
    host = Host(tmp_path, "amazon-linux-2023")
    host.bootstrap(*FRONTEND_ARGS)
    site = (ROOT / "frontend" / "nginx.conf").read_text()
    # Four back-ends (BackendCount's most), one `server` line each, as latchkey-frontend-deploy's
    # render() turns BACKENDS into the upstream.
    backends = "10.0.2.10:8080,10.0.3.10:8080,10.0.2.11:8080,10.0.3.11:8080"
    site = site.replace("${LATCHKEY_BACKEND}", backends.replace(",", "; server "))
    site = site.replace("${LATCHKEY_LISTEN}", "127.0.0.1:18080").replace("${LATCHKEY_ROOT}", str(host.bundle / "frontend" / "public"))
    d = tmp_path / "nginx-check"
    d.mkdir()
    (d / "site.conf").write_text(site)
    # Its own pid, log and temp folders, so that it checks as any user (a GitHub runner is not root).
    temp = "".join(f"    {kind}_temp_path {d}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (d / "nginx.conf").write_text(
        f"pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n{temp}"
        f"    access_log {d}/access.log;\n"
        f"    include {host.path('/etc/nginx/conf.d/00-cloudfront-realip.conf')};\n"
        f"    include {d}/site.conf;\n}}\n"
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run([nginx, "-t", "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_saved_arguments_take_added_options_once_so_mail_reaches_a_running_back_end(tmp_path):
    """scripts/deploy-aws.sh runs `backend --saved --mail-secret ... --mail-from ...` on every
    back-end: a MailDomain given after the hosts booted reaches them, and the saved arguments do
    not grow with each run."""
    host = Host(tmp_path, "amazon-linux-2023", digest=DIGEST)
    host.bootstrap(*backend_args())
    assert "SMTP_URL" not in env_file(host.path("/etc/latchkey/api.env"))
    extra = ["--mail-secret", MAIL_SECRET, "--mail-from", "Latchkey <no-reply@example.com>"]
    host.bootstrap("backend", "--saved", *extra)
    saved = host.path("/etc/latchkey/backend.bootstrap-args").read_text()
    host.bootstrap("backend", "--saved", *extra)
    assert host.path("/etc/latchkey/backend.bootstrap-args").read_text() == saved
    assert saved.splitlines().count("--mail-secret") == 1
    env = env_file(host.path("/etc/latchkey/api.env"))
    assert env["SMTP_URL"].startswith("smtps://AKIAIOSFODNN7EXAMPLE:")
    assert env["MAIL_FROM"] == "Latchkey <no-reply@example.com>"
    assert env["AUTH_ISSUER"] == "https://d111111abcdef8.cloudfront.net"


# ---------------------------------------------------------------------------------------------
# Hosts booted before the arguments were kept: only their user data holds them


def rendered_user_data(template: dict, instance: str, values: dict[str, str]) -> str:
    """The instance's UserData from infra/environment.yaml, with its ${...} filled in as
    CloudFormation would (the values a stack would give; the Sub's own map is named in VALUES)."""
    sub = template["Resources"][instance]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    text = sub[0] if isinstance(sub, list) else sub

    def fill(match: re.Match) -> str:
        name = match.group(1)
        assert name in values, f"{instance}'s user data uses ${{{name}}}: give it a value"
        return values[name]

    return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", fill, text)


STACK_VALUES = {
    "AWS::Region": REGION, "AWS::AccountId": "123456789012", "AWS::URLSuffix": "amazonaws.com",
    "ArtifactsBucket": "latchkey-artifacts", "Cdn.DomainName": "d111111abcdef8.cloudfront.net",
    "VpcCidr": "10.0.0.0/16", "DbHost": "db.abc.eu-west-1.rds.amazonaws.com", "DbPort": "5432",
    "DatabaseSecret": DB_SECRET, "KeyEncryptionSecret": KEY_SECRET, "Repository": "latchkey-api",
    "FrontendRepository": "latchkey-frontend", "Backends": "10.0.2.10:8080,10.0.3.10:8080",
    "MailArgs": f"--mail-secret '{MAIL_SECRET}' --mail-from 'Latchkey <no-reply@example.com>'",
}


@pytest.mark.parametrize("instance", ["BackendInstanceA", "BackendInstanceB"])
def test_a_back_end_without_saved_arguments_takes_them_from_its_user_data(tmp_path, template, instance):
    """scripts/deploy-aws.sh runs `backend --saved` on every running back-end; one booted from a
    bundle that did not keep the arguments reads them from cloud-init's copy of its user data and
    writes what the user data's own run wrote."""
    expected = Host(tmp_path / "booted-now", "debian-12", digest=DIGEST)
    expected.bootstrap(*backend_args(mail=True))

    host = Host(tmp_path / "booted-before", "debian-12", digest=DIGEST)
    user_data = host.path("/var/lib/cloud/instance/user-data.txt")
    user_data.parent.mkdir(parents=True)
    user_data.write_text(rendered_user_data(template, instance, STACK_VALUES))
    done = host.bootstrap("backend", "--saved")
    assert "taking the arguments from the host's user data" in done.stdout
    env = env_file(host.path("/etc/latchkey/api.env"))
    assert env == env_file(expected.path("/etc/latchkey/api.env"))
    assert env["AUTH_TRUSTED_PROXIES"] == "127.0.0.1/32,10.0.0.0/16"
    # Kept now, so the next run needs the user data no more.
    assert host.path("/etc/latchkey/backend.bootstrap-args").read_text() == \
        expected.path("/etc/latchkey/backend.bootstrap-args").read_text()


def test_a_front_end_without_saved_arguments_takes_them_from_its_user_data(tmp_path, template):
    expected = Host(tmp_path / "booted-now", "amazon-linux-2023", digest=DIGEST)
    expected.bootstrap(*FRONTEND_ARGS)
    host = Host(tmp_path / "booted-before", "amazon-linux-2023", digest=DIGEST)
    user_data = host.path("/var/lib/cloud/instance/user-data.txt")
    user_data.parent.mkdir(parents=True)
    user_data.write_text(rendered_user_data(template, "FrontendInstance", STACK_VALUES))
    host.bootstrap("frontend", "--saved")
    assert host.path("/etc/latchkey/frontend.bootstrap-args").read_text() == \
        expected.path("/etc/latchkey/frontend.bootstrap-args").read_text()
    assert host.commands("latchkey-frontend-deploy") == expected.commands("latchkey-frontend-deploy")


def test_saved_without_saved_arguments_or_user_data_names_what_is_missing(tmp_path):
    host = Host(tmp_path, "debian-12")
    done = host.bootstrap("backend", "--saved", check=False)
    assert done.returncode != 0
    assert "backend.bootstrap-args" in done.stderr and "user-data.txt" in done.stderr
    # User data that never ran the back-end's bootstrap (another role's) is not taken either.
    user_data = host.path("/var/lib/cloud/instance/user-data.txt")
    user_data.parent.mkdir(parents=True)
    user_data.write_text("#!/bin/bash\nexec /opt/latchkey/infra/host/bootstrap.sh frontend --backends 10.0.2.10:8080\n")
    assert host.bootstrap("backend", "--saved", check=False).returncode != 0
