"""Reading the GitHub Actions workflows and the Makefile, and the checks the tests run on them.

Every check takes the loaded workflows (and the repository root where it needs files) and returns
a list of problems, empty when all is well, so the same check can be run on the real files and,
in test_checks_catch_mistakes.py, on a copy broken on purpose to prove that it notices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = ROOT / ".github" / "workflows"


# --------------------------------------------------------------------------------------------
# YAML as GitHub reads it: YAML 1.2 booleans only (PyYAML's 1.1 rules turn the key `on` into
# True), and a duplicated key is an error (GitHub refuses the file; PyYAML keeps the last one).


class WorkflowLoader(yaml.SafeLoader):
    pass


WorkflowLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
WorkflowLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


WorkflowLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_yaml(text: str):
    return yaml.load(text, Loader=WorkflowLoader)  # noqa: S506 (a SafeLoader subclass)


def load_workflows(directory: Path = WORKFLOWS_DIR) -> dict[str, dict]:
    files = sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")])
    return {path.name: load_yaml(path.read_text()) for path in files}


# --------------------------------------------------------------------------------------------
# Walking jobs and steps.


@dataclass
class Job:
    workflow: str
    job_id: str
    body: dict

    @property
    def steps(self) -> list[dict]:
        return self.body.get("steps") or []

    @property
    def name(self) -> str:
        return f"{self.workflow}:{self.job_id}"

    @property
    def needs(self) -> list[str]:
        needs = self.body.get("needs") or []
        return [needs] if isinstance(needs, str) else list(needs)

    @property
    def permissions(self):
        return self.body.get("permissions")

    def runs(self) -> list[str]:
        return [step["run"] for step in self.steps if "run" in step]

    def run_text(self) -> str:
        return "\n".join(self.runs())

    def step_index(self, predicate) -> int | None:
        for index, step in enumerate(self.steps):
            if predicate(step):
                return index
        return None

    def uses_action(self, action: str) -> bool:
        return any(action_name(step.get("uses", "")) == action for step in self.steps)


def jobs(workflows: dict[str, dict]) -> list[Job]:
    return [
        Job(name, job_id, body or {})
        for name, workflow in workflows.items()
        for job_id, body in (workflow.get("jobs") or {}).items()
    ]


def job(workflows, workflow: str, job_id: str) -> Job:
    return Job(workflow, job_id, workflows[workflow]["jobs"][job_id])


def action_name(uses: str) -> str:
    """`aws-actions/configure-aws-credentials@v5.1.1` -> `aws-actions/configure-aws-credentials`."""
    return uses.split("@", 1)[0]


def triggers(workflow: dict) -> dict:
    on = workflow.get("on")
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {event: None for event in on}
    return dict(on or {})


def strip_comments(script: str) -> str:
    return "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))


def commands(script: str) -> list[str]:
    """Shell commands of a run block, one per line or `;`/`&&`/`||`/`|`-separated piece."""
    script = strip_comments(script).replace("\\\n", " ")
    pieces = re.split(r"\n|;|&&|\|\||\||\$\(|\)", script)
    return [piece.strip() for piece in pieces if piece.strip()]


def steps_running(job_: Job, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return [i for i, step in enumerate(job_.steps) if "run" in step and rx.search(strip_comments(step["run"]))]


def step_using(job_: Job, action: str) -> int | None:
    return job_.step_index(lambda step: action_name(step.get("uses", "")) == action)


# --------------------------------------------------------------------------------------------
# The Makefile: its targets and their recipes.


def makefile_targets(makefile: Path) -> dict[str, list[str]]:
    targets: dict[str, list[str]] = {}
    current: list[str] = []
    for line in makefile.read_text().splitlines():
        if line.startswith("\t"):
            for target in current:
                targets[target].append(line.strip())
            continue
        match = re.match(r"^([A-Za-z0-9_./%-][A-Za-z0-9_./% -]*?)\s*::?(?!=)(.*)$", line)
        if match and not line.lstrip().startswith("#"):
            names = [name for name in match.group(1).split() if not name.startswith(".")]
            current = names
            for name in names:
                targets.setdefault(name, [])
        elif line.strip() and not line.lstrip().startswith("#"):
            current = []
    return targets


def make_invocations(script: str) -> list[list[str]]:
    """The targets of each `make ...` in a run block (`make` alone means the default target)."""
    found = []
    for command in commands(script):
        words = command.split()
        if not words or words[0] != "make":
            continue
        targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        found.append(targets or [""])
    return found


# Top-level folders of this repository that a workflow may name a file in.
REPO_DIRS = {".ci", ".github", "api-container", "bench", "events", "frontend", "functions",
             "scripts", "sql", "tests"}
FILE_SUFFIXES = (".sh", ".py", ".yml", ".yaml", ".toml", ".txt", ".json")


def repo_paths(script: str) -> list[str]:
    """Words of a shell script that name a file or folder of this repository."""
    paths = []
    for word in re.split(r"[\s;|&()<>\"'`]+", strip_comments(script)):
        word = word.removeprefix("./")
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*", word) or word in {".", ".."}:
            continue
        first = word.split("/", 1)[0]
        if first in REPO_DIRS or ("/" not in word and word.endswith(FILE_SUFFIXES)):
            paths.append(word.rstrip("/"))
        elif "/" in word and word.endswith(FILE_SUFFIXES) and not word.startswith("/"):
            paths.append(word)
    return paths


def dispatched_workflows(script: str) -> list[tuple[str, str | None, list[str]]]:
    """(workflow file, --ref, -f input names) of each `gh workflow run` in a run block."""
    found = []
    for command in commands(script):
        words = [w.strip("\"'") for w in command.split()]
        if words[:3] != ["gh", "workflow", "run"] or len(words) < 4:
            continue
        ref, inputs = None, []
        for i, word in enumerate(words):
            if word == "--ref" and i + 1 < len(words):
                ref = words[i + 1]
            if word in ("-f", "-F", "--field", "--raw-field") and i + 1 < len(words):
                inputs.append(words[i + 1].split("=", 1)[0])
        found.append((words[3], ref, inputs))
    return found


def scripts_without_dispatch(script: str) -> str:
    return "\n".join(c for c in commands(script) if not c.startswith("gh workflow run"))


# --------------------------------------------------------------------------------------------
# The checks. Each returns a list of problems (strings); empty means it holds.

PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")
ALL_WRITE = {"write-all", "read-all"}


def check_pinned_actions(workflows) -> list[str]:
    problems = []
    for j in jobs(workflows):
        uses = j.body.get("uses")
        if uses and not uses.startswith("./.github/workflows/"):
            problems.append(f"{j.name}: reusable workflow {uses} is not one of this repository's")
        for step in j.steps:
            uses = step.get("uses")
            if uses is None:
                continue
            if uses.startswith("./") or uses.startswith("docker://"):
                problems.append(f"{j.name}: step uses {uses}: only pinned marketplace actions are expected")
            elif not PIN.match(uses):
                problems.append(f"{j.name}: {uses} is not pinned to a full version (vX.Y.Z) or a commit sha")
        for service, body in (j.body.get("services") or {}).items():
            image = (body or {}).get("image", "")
            if not re.search(r":\d+(\.\d+)+(-[a-z0-9.]+)?$|@sha256:[0-9a-f]{64}$", image):
                problems.append(f"{j.name}: service {service} image {image!r} is not pinned to a version")
    return problems


def check_permissions(workflows) -> list[str]:
    """Nothing granted at the top; each job its own grant; write access only where it is used."""
    problems = []
    for name, workflow in workflows.items():
        if workflow.get("permissions") != {}:
            problems.append(f"{name}: top-level permissions must be {{}}, found {workflow.get('permissions')!r}")
    for j in jobs(workflows):
        perms = j.permissions
        if perms is None:
            problems.append(f"{j.name}: no permissions of its own")
            continue
        if isinstance(perms, str):
            problems.append(f"{j.name}: permissions {perms!r}: list each scope instead")
            continue
        oidc = j.uses_action("aws-actions/configure-aws-credentials")
        pushes = bool(steps_running(j, r"\bgit push\b"))
        dispatches = bool(steps_running(j, r"\bgh workflow run\b"))
        for scope, level in perms.items():
            if scope == "id-token":
                if level == "write" and not oidc:
                    problems.append(f"{j.name}: id-token: write without an OIDC login")
                continue
            if level not in ("read", "none", "write"):
                problems.append(f"{j.name}: {scope}: {level!r} is not a permission level")
            if level != "write":
                continue
            if scope == "contents" and pushes:
                continue
            if scope == "actions" and dispatches:
                continue
            problems.append(f"{j.name}: {scope}: write is not needed by anything this job runs")
        if oidc and perms.get("id-token") != "write":
            problems.append(f"{j.name}: logs in to AWS through OIDC but lacks id-token: write")
        if pushes and perms.get("contents") != "write":
            problems.append(f"{j.name}: pushes but lacks contents: write")
    return problems


def check_references(workflows, root: Path = ROOT) -> list[str]:
    """Every make target, script, file and workflow that a workflow names exists."""
    problems = []
    targets = makefile_targets(root / "Makefile") if (root / "Makefile").exists() else {}
    default_target = next(iter(targets), None)

    def check_paths(where: str, script: str):
        for path in repo_paths(scripts_without_dispatch(script)):
            if not (root / path).exists():
                problems.append(f"{where}: {path} does not exist in the repository")

    for j in jobs(workflows):
        uses = j.body.get("uses", "")
        if uses.startswith("./"):
            called = root / uses
            if not called.exists():
                problems.append(f"{j.name}: {uses} does not exist")
            elif "workflow_call" not in triggers(load_yaml(called.read_text())):
                problems.append(f"{j.name}: {uses} has no workflow_call trigger")
        for script in j.runs():
            for invoked in make_invocations(script):
                for target in invoked:
                    name = target or default_target
                    if name not in targets:
                        problems.append(f"{j.name}: `make {target}`: the Makefile has no such target")
                        continue
                    check_paths(f"{j.name} (make {name})", "\n".join(targets[name]))
            check_paths(j.name, script)
            for workflow_file, _, _ in dispatched_workflows(script):
                if not (root / ".github" / "workflows" / workflow_file).exists():
                    problems.append(f"{j.name}: gh workflow run {workflow_file}: no such workflow")
    return list(dict.fromkeys(problems))


def check_expressions(workflows) -> list[str]:
    """No `${{ }}` inside a shell script (the classic injection: values go through env:), and
    every needs/steps reference points at something that exists."""
    problems = []
    for j in jobs(workflows):
        all_jobs = (workflows[j.workflow].get("jobs") or {})
        for needed in j.needs:
            if needed not in all_jobs:
                problems.append(f"{j.name}: needs {needed!r}, which is not a job of {j.workflow}")
        for index, step in enumerate(j.steps):
            if "${{" in step.get("run", ""):
                problems.append(f"{j.name} step {index + 1}: an expression inside run: pass it through env:")
        text = yaml.safe_dump(j.body)
        for needed, output in re.findall(r"needs\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)", text):
            if needed not in j.needs:
                problems.append(f"{j.name}: reads needs.{needed} but does not need it")
            elif output not in (all_jobs.get(needed, {}).get("outputs") or {}):
                problems.append(f"{j.name}: needs.{needed}.outputs.{output} is not an output of {needed}")
        ids = [step.get("id") for step in j.steps]
        for index, step in enumerate(j.steps):
            for ref in re.findall(r"steps\.([A-Za-z0-9_-]+)\.", yaml.safe_dump(step)):
                if ref not in ids[:index]:
                    problems.append(f"{j.name} step {index + 1}: steps.{ref} is not an earlier step")
        for ref in re.findall(r"steps\.([A-Za-z0-9_-]+)\.", yaml.safe_dump(j.body.get("outputs") or {})):
            if ref not in ids:
                problems.append(f"{j.name}: job output reads steps.{ref}, which is not a step")
    return problems


def check_cargo_caching(workflows) -> list[str]:
    """A job that compiles restores cargo's registry and target from the cache first."""
    problems = []
    builds = r"\bcargo\b|\bmake (test|lint|image|build)(\s|$)|\.ci/run"
    for j in jobs(workflows):
        first_build = min(steps_running(j, builds), default=None)
        if first_build is None:
            continue
        # The cargo cache is the one that holds cargo's registry or target (a job may cache
        # other things too, such as the pinned Python tools).
        cache = j.step_index(
            lambda step: action_name(step.get("uses", "")) == "actions/cache"
            and re.search(r"~/\.cargo/registry|\btarget\b", str((step.get("with") or {}).get("path", "")))
            is not None
        )
        if cache is None or cache > first_build:
            problems.append(f"{j.name}: compiles without restoring cargo's cache first")
            continue
        with_ = j.steps[cache].get("with") or {}
        paths = str(with_.get("path", ""))
        for needed in ("~/.cargo/registry", "target"):
            if needed not in paths:
                problems.append(f"{j.name}: the cargo cache does not hold {needed}")
        if "hashFiles('**/Cargo.lock')" not in str(with_.get("key", "")):
            problems.append(f"{j.name}: the cargo cache key does not follow Cargo.lock")
    return problems


def check_promotion(workflows) -> list[str]:
    """test.yml: the full checks, then the fast-forward of master (after them, and only then), then
    the master pipeline started for the promoted commit. Nothing else pushes anywhere."""
    problems = []
    test = workflows.get("test.yml", {})
    test_jobs = test.get("jobs") or {}
    checks = [jid for jid, body in test_jobs.items() if (body or {}).get("uses") == "./.github/workflows/checks.yml"]
    if not checks:
        problems.append("test.yml: does not run the full checks (checks.yml)")
    pushers = [j for j in jobs(workflows) if steps_running(j, r"\bgit push\b")]
    if [j.name for j in pushers] != ["test.yml:promote"]:
        problems.append(f"exactly one job, test.yml:promote, may git push; found {[j.name for j in pushers]}")
    if "promote" not in test_jobs:
        return problems + ["test.yml: no promote job"]
    promote = job(workflows, "test.yml", "promote")
    if not checks or not set(checks) <= set(promote.needs):
        problems.append(f"test.yml:promote: must need the checks job(s) {checks}, needs {promote.needs}")
    condition = str(promote.body.get("if", ""))
    if re.search(r"always\(\)|failure\(\)|cancelled\(\)", condition):
        problems.append(f"test.yml:promote: `if: {condition}` would run it when the checks did not pass")
    if "refs/heads/test" not in condition:
        problems.append("test.yml:promote: must run for the test branch only")
    push_steps = steps_running(promote, r"\bgit push\b")
    for index in push_steps:
        for command in commands(promote.steps[index]["run"]):
            if not command.startswith("git push"):
                continue
            if re.search(r"\s(--force\S*|-f)\b|\s\+\S+:", command):
                problems.append(f"test.yml:promote: `{command}` is not a fast-forward-only push")
            if not re.search(r"\$\{?GITHUB_SHA\}?:refs/heads/master\b", command):
                problems.append(f"test.yml:promote: `{command}` does not push the tested commit to master")
    dispatch_steps = steps_running(promote, r"\bgh workflow run\b")
    if not dispatch_steps:
        problems.append("test.yml:promote: does not start the master pipeline")
    elif not push_steps or min(dispatch_steps) <= max(push_steps):
        problems.append("test.yml:promote: the master pipeline must be started after the fast-forward")
    for index in dispatch_steps:
        for workflow_file, ref, inputs in dispatched_workflows(promote.steps[index]["run"]):
            if workflow_file != "master.yml" or ref != "master":
                problems.append(f"test.yml:promote: starts {workflow_file} on {ref}, not master.yml on master")
            declared = ((triggers(workflows.get(workflow_file, {})).get("workflow_dispatch") or {}).get("inputs") or {})
            for name in inputs:
                if name not in declared:
                    problems.append(f"test.yml:promote: passes input {name!r}, which {workflow_file} does not declare")
    return problems


def check_release(workflows) -> list[str]:
    """master.yml: only master is released; the image is built and tested before any AWS step;
    OIDC with the role and region from repository variables; the tag is the commit sha, lands on
    the image itself (no attestation index), and its digest is printed."""
    problems = []
    master = workflows.get("master.yml")
    if master is None:
        return ["there is no master.yml"]
    releases = [j for j in jobs(workflows) if j.uses_action("aws-actions/amazon-ecr-login")]
    if [j.name for j in releases] != ["master.yml:release"]:
        return problems + [f"only master.yml:release may log in to ECR; found {[j.name for j in releases]}"]
    release = releases[0]
    for j in jobs(workflows):
        if j.name != release.name and (steps_running(j, r"\bdocker push\b") or j.uses_action("aws-actions/configure-aws-credentials")):
            problems.append(f"{j.name}: only master.yml:release may log in to AWS or push an image")
    # Only master: the gate it needs fails on any other ref.
    gate_ok = False
    for needed in release.needs:
        gate = job(workflows, "master.yml", needed)
        if re.search(r'"\$GITHUB_REF" != refs/heads/master', gate.run_text()):
            gate_ok = True
    if not gate_ok and "refs/heads/master" not in str(release.body.get("if", "")):
        problems.append("master.yml:release: nothing keeps it from releasing a branch other than master")
    # Build, then the container test, then AWS.
    order = {
        "make image": min(steps_running(release, r"\bmake image\b"), default=None),
        "container test": min(steps_running(release, r"tests/deploy/smoke\.py"), default=None),
        "AWS login": step_using(release, "aws-actions/configure-aws-credentials"),
        "ECR login": step_using(release, "aws-actions/amazon-ecr-login"),
        "docker push": min(steps_running(release, r"\bdocker push\b"), default=None),
    }
    for what, index in order.items():
        if index is None:
            problems.append(f"master.yml:release: no {what} step")
    found = [index for index in order.values() if index is not None]
    if len(found) == len(order) and found != sorted(found):
        problems.append(f"master.yml:release: the steps must run in the order {list(order)}")
    container = release.steps[order["container test"]]["run"] if order["container test"] is not None else ""
    if "docker run" not in container or "$IMAGE" not in container:
        problems.append("master.yml:release: the container test must run the built image")
    env = {**(master.get("env") or {}), **(release.body.get("env") or {})}
    if "${{ github.sha }}" not in str(env.get("IMAGE", "")):
        problems.append("master.yml:release: the image is not named after the commit sha")
    if not any("postgres" in str((s or {}).get("image", "")) for s in (release.body.get("services") or {}).values()):
        problems.append("master.yml:release: no PostgreSQL service for the container test")
    if str(env.get("BUILDX_NO_DEFAULT_ATTESTATIONS")) != "1":
        problems.append("master.yml:release: provenance attestations are not turned off")
    # OIDC: role and region from variables, no keys.
    if order["AWS login"] is not None:
        with_ = release.steps[order["AWS login"]].get("with") or {}
        if with_.get("role-to-assume") != "${{ vars.AWS_ROLE_ARN }}":
            problems.append("master.yml:release: role-to-assume must be ${{ vars.AWS_ROLE_ARN }}")
        if with_.get("aws-region") != "${{ vars.AWS_REGION }}":
            problems.append("master.yml:release: aws-region must be ${{ vars.AWS_REGION }}")
        for key in ("aws-access-key-id", "aws-secret-access-key", "aws-session-token"):
            if key in with_:
                problems.append(f"master.yml:release: {key}: no stored keys, OIDC only")
    if "secrets." in yaml.safe_dump(master):
        problems.append("master.yml: uses a secret; the release needs none (OIDC)")
    if order["docker push"] is not None:
        push = release.steps[order["docker push"]]["run"]
        if not re.search(r":\$\{?GITHUB_SHA\}?", push):
            problems.append("master.yml:release: the pushed tag is not the commit sha")
        if "imageDigest" not in push or "Digest:" not in push:
            problems.append("master.yml:release: the pushed digest is not printed")
        if "imageManifestMediaType" not in push:
            problems.append("master.yml:release: nothing checks that the tag names an image, not an index")
    return problems


def check_concurrency(workflows) -> list[str]:
    """Releases never race; a started promotion or release is never cancelled half-way."""
    problems = []
    for name in ("master.yml", "test.yml"):
        workflow = workflows.get(name, {})
        concurrency = workflow.get("concurrency")
        if not isinstance(concurrency, dict) or not concurrency.get("group"):
            problems.append(f"{name}: no concurrency group")
        elif concurrency.get("cancel-in-progress") is not False:
            problems.append(f"{name}: cancel-in-progress must be false (never cancel a release half-way)")
    master_group = (workflows.get("master.yml", {}).get("concurrency") or {}).get("group", "")
    if "${{" in str(master_group):
        problems.append("master.yml: the release group must be one fixed name, whatever the run")
    return problems


def check_triggers(workflows) -> list[str]:
    expected = {
        "dev.yml": {"push": {"branches": ["dev"]}},
        "test.yml": {"push": {"branches": ["test"]}},
        "checks.yml": {"workflow_call"},
        "master.yml": {"workflow_dispatch"},
    }
    problems = []
    if set(workflows) != set(expected):
        problems.append(f"workflows: expected {sorted(expected)}, found {sorted(workflows)}")
    for name, want in expected.items():
        got = triggers(workflows.get(name, {}))
        if isinstance(want, set):
            if set(got) != want:
                problems.append(f"{name}: triggers {sorted(got)}, expected {sorted(want)}")
        elif got != want:
            problems.append(f"{name}: triggers {got}, expected {want}")
    for name, workflow in workflows.items():
        push = triggers(workflow).get("push") or {}
        every_branch = "push" in triggers(workflow) and not push.get("branches")
        if every_branch or "master" in (push.get("branches") or []):
            problems.append(f"{name}: runs on a push to master; only the test pipeline releases")
    return problems



def check_full_checks(workflows) -> list[str]:
    """checks.yml, run by dev.yml and test.yml, runs `bash .ci/run` (what CI runs anywhere, and so
    `make test` whole, with its own PostgreSQL and the TLS tests), plus the quick linters."""
    problems = []
    for caller in ("dev.yml", "test.yml"):
        called = [
            body.get("uses")
            for body in (workflows.get(caller, {}).get("jobs") or {}).values()
            if (body or {}).get("uses")
        ]
        if "./.github/workflows/checks.yml" not in called:
            problems.append(f"{caller}: does not call checks.yml")
    checks = workflows.get("checks.yml")
    if checks is None:
        return problems + ["there is no checks.yml"]
    all_jobs = jobs({"checks.yml": checks})
    text = "\n".join(strip_comments(j.run_text()) for j in all_jobs)
    wanted = {
        "the tests (.ci/run)": r"^\s*bash \.ci/run\s*$",
        "the workflow linters": r"^\s*make test-workflows\s*$",
        "cfn-lint": r"^\s*cfn-lint template\.yaml",
        "sam validate --lint": r"^\s*sam validate --lint\b",
    }
    for what, pattern in wanted.items():
        if not re.search(pattern, text, re.MULTILINE):
            problems.append(f"checks.yml: does not run {what}")
    # .ci/run must stay what its name says: the README's test command, whole.
    ci_run = strip_comments((ROOT / ".ci" / "run").read_text())
    if not re.search(r"^make test\s*$", ci_run, re.MULTILINE):
        problems.append(".ci/run: does not run `make test`")
    test_sh = strip_comments((ROOT / "scripts" / "test.sh").read_text())
    for what, pattern in {"formatting": r"cargo fmt --all -- --check", "clippy": r"cargo clippy .*-D warnings"}.items():
        if not re.search(pattern, test_sh):
            problems.append(f"scripts/test.sh (make test): does not run {what}")
    testers = [j for j in all_jobs if re.search(r"^\s*bash \.ci/run\s*$", strip_comments(j.run_text()), re.MULTILINE)]
    for tester in testers:
        env = {**(checks.get("env") or {}), **(tester.body.get("env") or {})}
        # make test starts its own cluster (with TLS) unless DATABASE_URL points elsewhere; a
        # service container would speak no TLS and the TLS tests would be skipped on GitHub.
        for skipped in ("DATABASE_URL", "LATCHKEY_SKIP_TLS_TESTS"):
            if skipped in env:
                problems.append(f"{tester.name}: sets {skipped}, so make test would not run on its own TLS cluster")
        if tester.body.get("services"):
            problems.append(f"{tester.name}: has service containers; make test starts what it needs itself")
        if not str(tester.body.get("runs-on", "")).startswith("ubuntu-"):
            problems.append(f"{tester.name}: runs on {tester.body.get('runs-on')!r}, not a GitHub Ubuntu runner (Docker, sudo)")
        minutes = tester.body.get("timeout-minutes")
        if not isinstance(minutes, int) or not 60 <= minutes <= 120:
            problems.append(f"{tester.name}: timeout-minutes {minutes!r}: a cold run needs about an hour")
        # Ubuntu's chromium package is a snap shim: the browser suite needs one named.
        chromium = tester.step_index(lambda step: "E2E_CHROMIUM=" in str(step.get("run", "")) and "GITHUB_ENV" in str(step.get("run", "")))
        ci = min(steps_running(tester, r"^\s*bash \.ci/run\s*$"), default=None)
        if chromium is None or ci is None or chromium > ci:
            problems.append(f"{tester.name}: no step names a Chromium (E2E_CHROMIUM) before .ci/run")
    return problems
