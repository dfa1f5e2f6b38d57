"""The deploy chain as one chain, on this machine (issue 15, "Tests that must exist", third item).

    image build (make image) -> docker push to a local registry -> the same image in moto's ECR
    -> the ECR "Image Action" event, from the real digest -> the deploy Lambda (cargo lambda)
    -> DescribeImages and SendCommand on moto -> the document's own script (template.yaml)
    -> latchkey-deploy on two local "hosts" -> nginx with frontend/nginx.conf in front of both

and the front-end's own route through the same chain (issue 15, item 3):

    front-end image (make frontend-image: the site and its nginx settings, FROM scratch)
    -> local registry and moto's ECR (its own repository) -> the event -> the deploy Lambda
    -> SendCommand of the front-end document to the front-end tag -> its own script
    (latchkey-frontend-deploy) on the local front-end "host" -> the new site served, under load

Real here: the image, the registry, Docker, the hosts' nginx and deploy script, the front-end's
nginx configuration, the Lambda's binary through the Lambda runtime API, moto's ECR (digest
check) and SSM (the command as sent: document, parameters, targets resolved from EC2 tags, rate
control settings), PostgreSQL with TLS verified against its CA.

Not emulated by moto, and played by tests/chain/chain.py instead (named so that nobody mistakes
it for AWS's behaviour):
- the SSM agent and SSM's delivery: moto marks an invocation Success the moment the command is
  sent and runs nothing. chain.SsmAgent runs the document's script on each host, one at a time,
  stops at the first error (MaxConcurrency 1, MaxErrors 0: it refuses other values rather than
  guess), marks the hosts it never reached Cancelled/Terminated, and writes each outcome back
  into moto's records, where the Lambda reads them with GetCommandInvocation and ListCommands.
  (moto has no ListCommandInvocations either: functions/deploy/tests/moto_server.py adds it.)
- EventBridge: the event is made from events/ecr-push.json with the pushed digest; the rule's
  pattern is checked against it here, not by EventBridge.
- the hosts share this machine's Docker engine, and an image one host pulled is already on the
  other; each host has its own nginx, ports, state and container names.
"""

import fnmatch
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions" / "deploy" / "tests"))

import chain  # noqa: E402
import moto_server  # noqa: E402,F401 - adds ListCommandInvocations to moto's SSM

RUN = os.getpid()


@pytest.fixture(scope="module")
def world(request):
    # Not under pytest's /tmp/pytest-of-root: every pytest run as root (any other test suite on
    # this machine) sets that folder back to 0700, and nginx's workers and the postgres user
    # walk into their folders here. /var/tmp, where the images' build cache lives too.
    work = Path(tempfile.mkdtemp(prefix="latchkey-chain-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    print(f"chain: this run's folders are in {work}")
    local = f"latchkey-chain-{RUN}"
    w = type("World", (), {})()
    w.work = work
    ready = False
    stops = []
    try:
        chain.build_images(work, local)
        chain.build_frontend_images(work, f"{local}-frontend")

        # The database every host uses, as RDS: TLS verified against its CA.
        pg = work / "pg"
        (pg_port,) = chain.free_ports(1)
        chain.run(str(chain.ROOT / "scripts" / "pg.sh"), "start", str(pg), str(pg_port), "--throwaway")
        stops.append(lambda: chain.run(str(chain.ROOT / "scripts" / "pg.sh"), "stop", str(pg)))
        api_env = work / "api.env"
        api_env.write_text(
            f"DATABASE_URL=postgres://postgres@127.0.0.1:{pg_port}/postgres?sslmode=verify-full\n"
            "AUTH_COOKIE_SECURE=false\n"
            f"AUTH_KEY_ENCRYPTION_KEY={chain.base64.b64encode(os.urandom(32)).decode()}\n"
            # The front-end's nginx and the host's nginx, both on loopback here.
            "AUTH_TRUSTED_PROXIES=127.0.0.1/32\n"
            "AUTH_IP_LOGINS_PER_MINUTE=0\n"
            "AUTH_IP_REGISTRATIONS_PER_HOUR=0\n"
            # Below production's 600000: this test is about the swap, and two cores carry the
            # load, two hosts, the Lambda and the builds.
            "AUTH_PBKDF2_ITERATIONS=20000\n"
            "RUST_LOG=warn\n"
        )
        os.chmod(api_env, 0o600)
        chain.give_to_root(api_env)

        w.registry = chain.Registry(work / "registry")
        w.registry.start()
        stops.append(w.registry.stop)
        w.digests = {tag: chain.push(local, tag, w.registry) for tag in ("v1", "v2", "never-ready")}
        w.frontend_digests = {
            tag: chain.push(f"{local}-frontend", tag, w.registry, chain.FRONTEND_REPOSITORY)
            for tag in ("v1", "v2", "broken")
        }
        stops.append(lambda: remove_images(w))

        w.moto = chain.Moto()
        w.moto.start()
        stops.append(w.moto.stop)
        ec2 = w.moto.client("ec2")
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

        def instances(count, value):
            reply = ec2.run_instances(
                ImageId=ami, MinCount=count, MaxCount=count, InstanceType="t4g.micro",
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": [{"Key": chain.TAG_KEY, "Value": value}]}
                ],
            )
            return sorted(i["InstanceId"] for i in reply["Instances"])

        backend_ids = instances(2, chain.TAG_VALUE)
        w.frontend_instance = instances(1, chain.FRONTEND_TAG_VALUE)[0]
        for repository in (chain.REPOSITORY, chain.FRONTEND_REPOSITORY):
            w.moto.client("ecr").create_repository(
                repositoryName=repository, imageTagMutability="IMMUTABLE"
            )
        for name, resource in (
            (chain.DOCUMENT, "DeployDocument"),
            (chain.FRONTEND_DOCUMENT, "FrontendDeployDocument"),
        ):
            w.moto.client("ssm").create_document(
                Name=name,
                Content=json.dumps(moto_server.document_content(resource)),
                DocumentType="Command",
                DocumentFormat="JSON",
            )

        w.hosts = []
        for name, instance in zip(("host-a", "host-b"), backend_ids):
            host = chain.Host(name, work / name, api_env, pg / "ca.crt", RUN)
            host.instance = instance
            stops.append(host.stop)
            host.setup()
            w.hosts.append(host)
        w.frontend = chain.Frontend(work / "frontend", [f"127.0.0.1:{h.listen}" for h in w.hosts])
        stops.append(w.frontend.stop)
        w.frontend.start()
        w.agent = chain.SsmAgent(
            w.moto, {w.frontend_instance: w.frontend, **{h.instance: h for h in w.hosts}}
        )
        w.agent.install()

        w.deploy = chain.DeployLambda(work / "lambda", w.moto, w.registry)
        w.deploy.start()
        stops.append(w.deploy.stop)
        ready = True
        yield w
    finally:
        failures = []
        for stop in reversed(stops):
            try:
                stop()
            except Exception as error:  # noqa: BLE001 - every stop runs
                failures.append(repr(error))
        if failures:
            print("clean-up problems:", *failures, sep="\n  ")
        # Kept for a look when a test failed (its logs: lambda/, host-*/, registry/).
        if not ready or request.session.testsfailed or failures:
            print(f"chain: kept {work}")
        else:
            chain.remove_tree(work)


def remove_images(w):
    images = [f"{w.registry.host}/{chain.REPOSITORY}@{d}" for d in w.digests.values()]
    images += [
        f"{w.registry.host}/{chain.FRONTEND_REPOSITORY}@{d}"
        for d in getattr(w, "frontend_digests", {}).values()
    ]
    for image in images:
        chain.subprocess.run(["docker", "image", "rm", image], capture_output=True, check=False)


def image_ref(w, tag):
    return f"{w.registry.host}/{chain.REPOSITORY}@{w.digests[tag]}"


def push_to_ecr_and_event(w, tag):
    """The push as ECR records it, and the event EventBridge would hand the Lambda."""
    image = w.moto.push_to_ecr(w.registry, tag, w.digests[tag])
    assert image["imageId"] == {"imageDigest": w.digests[tag], "imageTag": tag}
    event = chain.push_event(tag, w.digests[tag])
    assert_the_rule_matches(event)
    return event


def assert_the_rule_matches(event):
    """template.yaml's EventBridge pattern, applied to the event (EventBridge is not emulated)."""
    pattern = chain.template()["Resources"]["DeployFunction"]["Properties"]["Events"]["EcrPush"][
        "Properties"
    ]["Pattern"]
    assert event["source"] in pattern["source"]
    assert event["detail-type"] in pattern["detail-type"]
    detail = pattern["detail"]
    assert event["detail"]["action-type"] in detail["action-type"]
    assert event["detail"]["result"] in detail["result"]
    assert detail["repository-name"] == [{"Ref": "RepositoryName"}, {"Ref": "FrontendRepositoryName"}]
    assert detail["image-tag"] == [{"wildcard": {"Ref": "ImageTagPattern"}}]
    # The template's default ImageTagPattern, the one the Lambda gets here too.
    default = chain.template()["Parameters"]["ImageTagPattern"]["Default"]
    assert fnmatch.fnmatchcase(event["detail"]["image-tag"], default)


def last_command(w):
    ssm = w.moto.client("ssm")
    return ssm.list_commands()["Commands"][-1]


def expect_serving(w, tag, containers=None):
    for host in w.hosts:
        serving = host.serving()
        assert len(serving) == 1, (host.name, serving)
        _name, image, version = serving[0]
        assert image == image_ref(w, tag), (host.name, serving)
        assert version == tag, (host.name, serving)
        if containers is not None:
            assert serving[0][0] == containers[host.name], (host.name, serving, containers)
    out = chain.run("python3", str(chain.ROOT / "tests" / "deploy" / "smoke.py"), str(w.frontend.port))
    assert "me" in out or out, out


def check_load(summary, minimum=200):
    print(
        f"load: {summary['requests']} requests in {summary['seconds']} s, {summary['failures']} failed, "
        f"{summary['stale_keepalive_retries']} keep-alive retries; {summary['by_outcome']}"
    )
    assert summary["failures"] == 0, summary["first_failures"]
    assert summary["requests"] >= minimum, summary


def test_the_pushed_image_is_the_one_ecr_and_the_registry_hold(world):
    w = world
    assert len(set(w.digests.values())) == 3, w.digests
    event = push_to_ecr_and_event(w, "v1")
    found = w.moto.client("ecr").describe_images(
        repositoryName=chain.REPOSITORY, imageIds=[{"imageDigest": w.digests["v1"]}]
    )["imageDetails"]
    assert [d["imageTags"] for d in found] == [["v1"]]
    assert event["detail"]["image-digest"] == w.digests["v1"]
    # The document in moto is template.yaml's DeployDocument content.
    content = json.loads(
        w.moto.client("ssm").get_document(Name=chain.DOCUMENT, DocumentFormat="JSON")["Content"]
    )
    assert content == moto_server.document_content()
    w.v1_event = event


def test_the_first_push_deploys_on_both_hosts_one_at_a_time(world):
    w = world
    done = w.deploy.invoke(w.v1_event, "v1")
    assert done.returncode == 0, (done.stdout, done.stderr, w.deploy.log()[-4000:])
    reply = json.loads(done.stdout)
    assert reply["image"] == image_ref(w, "v1")
    assert reply["instances"] == [{"id": h.instance, "status": "Success"} for h in w.hosts]

    command = last_command(w)
    assert command["CommandId"] == reply["command_id"]
    assert command["DocumentName"] == chain.DOCUMENT
    assert command["Parameters"] == {"image": [image_ref(w, "v1")]}
    assert command["Targets"] == [{"Key": f"tag:{chain.TAG_KEY}", "Values": [chain.TAG_VALUE]}]
    assert (command["MaxConcurrency"], command["MaxErrors"]) == ("1", "0")
    assert command["Status"] == "Success"
    assert w.frontend_instance not in command["InstanceIds"]
    assert not w.agent.problems, w.agent.problems
    script = w.agent.scripts[command["CommandId"]]
    assert script == f"exec /usr/local/sbin/latchkey-deploy deploy '{image_ref(w, 'v1')}'"

    a, b = (h.runs[-1] for h in w.hosts)
    assert a["code"] == 0 and b["code"] == 0
    assert a["ended"] <= b["started"], "host-b started before host-a had finished"
    assert f"pulling {image_ref(w, 'v1')}" in a["stdout"], a["stdout"]
    expect_serving(w, "v1")


def test_the_second_push_swaps_both_hosts_without_a_failed_request(world):
    w = world
    event = push_to_ecr_and_event(w, "v2")
    before = [h.requests_seen() for h in w.hosts]
    load = chain.Load(w.work, w.frontend.port, "v2")
    load.start()
    try:
        done = w.deploy.invoke(event, "v2")
        summary = load.finish()
    finally:
        load.kill()
    assert done.returncode == 0, (done.stdout, done.stderr, w.deploy.log()[-4000:])
    reply = json.loads(done.stdout)
    assert reply["image"] == image_ref(w, "v2")
    assert reply["instances"] == [{"id": h.instance, "status": "Success"} for h in w.hosts]
    a, b = (h.runs[-1] for h in w.hosts)
    assert a["ended"] <= b["started"]
    for run in (a, b):
        assert f"deployed {image_ref(w, 'v2')}" in run["stdout"], run["stdout"]
    check_load(summary)
    # The front-end spread the load over both back-ends.
    seen = [h.requests_seen() - n for h, n in zip(w.hosts, before)]
    assert all(n > 50 for n in seen), seen
    expect_serving(w, "v2")
    w.v2_containers = {h.name: h.serving()[0][0] for h in w.hosts}


def test_a_push_that_never_gets_ready_is_rolled_back_and_stops_the_roll(world):
    w = world
    event = push_to_ecr_and_event(w, "never-ready")
    runs_before = [len(h.runs) for h in w.hosts]
    load = chain.Load(w.work, w.frontend.port, "never-ready")
    load.start()
    began = time.monotonic()
    try:
        done = w.deploy.invoke(event, "never-ready")
        summary = load.finish()
    finally:
        load.kill()
    print(f"the failed deploy took {time.monotonic() - began:.0f}s")
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Deploy.Failed" in done.stdout + done.stderr, (done.stdout, done.stderr)
    answer = w.deploy.last_error()
    first, second = w.hosts
    # The Lambda's invocation fails with the host's own words.
    assert answer.startswith("Deploy.Failed: "), answer
    assert f"{first.instance} Failed" in answer, answer
    assert f"{second.instance} Cancelled" in answer or f"{second.instance} Pending" in answer, answer
    assert "was not ready within 12s" in answer, answer
    assert "still serves" in answer, answer

    # The roll stopped at the first host: the second never ran the script.
    assert len(first.runs) == runs_before[0] + 1
    assert len(second.runs) == runs_before[1]
    ssm = w.moto.client("ssm")
    command = last_command(w)
    assert command["Status"] == "Failed"
    failed = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=first.instance)
    assert (failed["Status"], failed["ResponseCode"]) == ("Failed", 1)
    skipped = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=second.instance)
    assert (skipped["Status"], skipped["StatusDetails"]) == ("Cancelled", "Terminated")

    # Rolled back on the first host, untouched on the second: the same v2 containers serve.
    check_load(summary)
    expect_serving(w, "v2", w.v2_containers)


# ---------------------------------------------------------------------------------------------
# The front-end's route


def frontend_ref(w, tag):
    return f"{w.registry.host}/{chain.FRONTEND_REPOSITORY}@{w.frontend_digests[tag]}"


def frontend_push(w, tag):
    image = w.moto.push_to_ecr(
        w.registry, tag, w.frontend_digests[tag], chain.FRONTEND_REPOSITORY
    )
    assert image["imageId"] == {"imageDigest": w.frontend_digests[tag], "imageTag": tag}
    event = chain.push_event(tag, w.frontend_digests[tag], chain.FRONTEND_REPOSITORY)
    assert_the_rule_matches(event)
    return event


def frontend_deploy_under_load(w, tag):
    """Pushes the front-end image `tag` and invokes the Lambda with its event, under load on the
    front-end (the site's page and stylesheet, and the API through it)."""
    event = frontend_push(w, tag)
    backend_runs = [len(h.runs) for h in w.hosts]
    load = chain.Load(w.work, w.frontend.port, f"frontend-{tag}", pages=True)
    load.start()
    try:
        done = w.deploy.invoke(event, f"frontend-{tag}")
        summary = load.finish()
    finally:
        load.kill()
    # The front-end route never reaches the back-end hosts.
    assert [len(h.runs) for h in w.hosts] == backend_runs
    return done, summary


def test_the_site_served_before_any_front_end_push_is_the_repository_s(world):
    w = world
    index = w.frontend.index()
    assert index == (chain.ROOT / "frontend" / "public" / "index.html").read_text()
    assert chain.frontend_version(index) is None
    assert w.frontend.status()["serving"].endswith(f"({chain.ROOT / 'frontend'})")


def test_a_front_end_push_swaps_the_site_on_the_front_end_host_without_a_failed_request(world):
    w = world
    done, summary = frontend_deploy_under_load(w, "v1")
    assert done.returncode == 0, (done.stdout, done.stderr, w.deploy.log()[-4000:])
    reply = json.loads(done.stdout)
    assert reply["image"] == frontend_ref(w, "v1")
    assert reply["instances"] == [{"id": w.frontend_instance, "status": "Success"}]

    # What the Lambda sent, as SSM recorded it: the front-end document, to the front-end tag.
    command = last_command(w)
    assert command["CommandId"] == reply["command_id"]
    assert command["DocumentName"] == chain.FRONTEND_DOCUMENT
    assert command["Parameters"] == {"image": [frontend_ref(w, "v1")]}
    assert command["Targets"] == [
        {"Key": f"tag:{chain.TAG_KEY}", "Values": [chain.FRONTEND_TAG_VALUE]}
    ]
    assert command["InstanceIds"] == [w.frontend_instance]
    assert (command["MaxConcurrency"], command["MaxErrors"]) == ("1", "0")
    assert not w.agent.problems, w.agent.problems
    script = w.agent.scripts[command["CommandId"]]
    assert script == f"exec /usr/local/sbin/latchkey-frontend-deploy deploy '{frontend_ref(w, 'v1')}'"
    run = w.frontend.runs[-1]
    assert run["code"] == 0, run
    assert f"pulling {frontend_ref(w, 'v1')}" in run["stdout"], run["stdout"]
    assert "(version v1) serves on" in run["stdout"], run["stdout"]

    # The new site serves; the page under load never failed, and the API through it neither.
    assert chain.frontend_version(w.frontend.index()) == "v1"
    check_load(summary, minimum=100)
    assert summary["by_outcome"].get("page 200", 0) > 20, summary["by_outcome"]
    assert w.frontend.status()["serving"].endswith(f"({frontend_ref(w, 'v1')})")


def test_a_front_end_that_does_not_serve_is_refused_and_the_old_site_keeps_serving(world):
    w = world
    runs_before = len(w.frontend.runs)
    done, summary = frontend_deploy_under_load(w, "broken")
    assert done.returncode != 0, (done.stdout, done.stderr)
    answer = w.deploy.last_error()
    # The Lambda's invocation fails with the host's own words.
    assert answer.startswith("Deploy.Failed: "), answer
    assert f"{w.frontend_instance} Failed" in answer, answer
    assert "does not serve: GET / answered 40" in answer, answer
    assert "The old site" in answer and "keeps serving" in answer, answer
    assert len(w.frontend.runs) == runs_before + 1
    command = last_command(w)
    assert command["DocumentName"] == chain.FRONTEND_DOCUMENT
    assert command["Status"] == "Failed"

    # v1 still serves, and no request saw the broken one.
    assert chain.frontend_version(w.frontend.index()) == "v1"
    check_load(summary, minimum=100)
    assert w.frontend.status()["serving"].endswith(f"({frontend_ref(w, 'v1')})")


def test_the_next_front_end_push_deploys_and_keeps_the_one_before_for_a_rollback(world):
    w = world
    done = w.deploy.invoke(frontend_push(w, "v2"), "frontend-v2")
    assert done.returncode == 0, (done.stdout, done.stderr, w.deploy.log()[-4000:])
    assert chain.frontend_version(w.frontend.index()) == "v2"
    status = w.frontend.status()
    assert status["serving"].endswith(f"({frontend_ref(w, 'v2')})"), status
    assert status["previous"].endswith(f"({frontend_ref(w, 'v1')})"), status
    # The API still answers through the front-end, to the back-ends' v2.
    expect_serving(w, "v2")
