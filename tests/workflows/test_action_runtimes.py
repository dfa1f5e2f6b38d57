"""Every action the workflows use is pinned by commit sha to a version that runs on a current Node
runtime. GitHub deprecated node20 for actions (runners force node24 and then drop node20), so an
action still on node20 first warns on every run, then stops running.

GitHub cannot be reached from the tests, so the runtime of each pinned commit is recorded here,
read from that commit's own action.yml (`runs.using`) in the action's repository:

    git show <sha>:action.yml            (in a clone of github.com/<owner>/<name>)
    git tag --points-at <sha>            (the version the workflow's comment names)

Checked 2026-12-07 for each row. A new pin (Dependabot, or by hand) fails
test_every_pinned_action_is_in_the_table until its row is added, after the same two commands.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"

CURRENT_NODE = {"node24"}

# action -> sha -> (the tag at that commit, runs.using in that commit's action.yml)
PINNED = {
    "actions/checkout": {
        "de0fac2e4500dabe0009e67214ff5f5447ce83dd": ("v6.0.2", "node24"),
    },
    "actions/cache": {
        "27d5ce7f107fe9357f9df03efb73ab90386fccae": ("v5.0.5", "node24"),
    },
    "actions/setup-python": {
        "a309ff8b426b58ec0e2a45f0f869d46889d02405": ("v6.2.0", "node24"),
    },
    "aws-actions/configure-aws-credentials": {
        "e6de054238d6b7531b4efff3b6587d9aade6a06c": ("v6.2.3", "node24"),
    },
    "aws-actions/amazon-ecr-login": {
        "d539f0932e70871a027e9d5a9d8fc38589180a64": ("v2.1.6", "node24"),
    },
}

USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?:\s*#\s*(?P<comment>\S+))?\s*$", re.M)


def used_actions():
    """(file, action, ref, the comment after it) for every step's `uses:` but local workflows."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        for m in USES.finditer(path.read_text()):
            ref = m.group("ref").strip("'\"")
            if ref.startswith("./"):
                continue
            action, _, version = ref.partition("@")
            found.append((path.name, action, version, m.group("comment")))
    return found


def test_the_workflows_use_actions_at_all():
    # A regex that stopped matching would make the tests below pass on nothing.
    assert len(used_actions()) >= 5


def test_every_action_is_pinned_by_a_full_commit_sha_with_its_version_beside_it():
    for name, action, version, comment in used_actions():
        assert re.fullmatch(r"[0-9a-f]{40}", version), f"{name}: {action}@{version} is not pinned by commit sha"
        assert comment and re.fullmatch(r"v\d+\.\d+\.\d+", comment), f"{name}: {action}@{version} has no '# vX.Y.Z' beside it"


def test_every_pinned_action_is_in_the_table_at_the_version_its_comment_names():
    for name, action, sha, comment in used_actions():
        assert action in PINNED, f"{name}: {action} is not in PINNED: record its runtime (see the docstring)"
        assert sha in PINNED[action], f"{name}: {action}@{sha} is not in PINNED: record its runtime (see the docstring)"
        tag, _runtime = PINNED[action][sha]
        assert comment == tag, f"{name}: {action}@{sha} is {tag}, but the comment says {comment}"


def test_every_pinned_action_runs_on_a_current_node_runtime():
    for name, action, sha, _comment in used_actions():
        _tag, runtime = PINNED[action][sha]
        assert runtime in CURRENT_NODE, f"{name}: {action}@{sha} runs on {runtime}, not {sorted(CURRENT_NODE)}"
