"""The pipeline's shape, read from .github/workflows/: dev -> test -> master -> ECR.

GitHub cannot be reached from here, so these tests are what stands between a workflow mistake and
a broken (or unsafe) release: triggers per branch, the order of promotion and release, the grants,
OIDC and ECR, pins, caching, and that every command a workflow runs exists in the repository.
"""

import shutil
import subprocess

import pytest

import pipeline_shape as shape


def assert_holds(problems):
    """Fail with every problem on a line of its own, not pytest's truncated list diff."""
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_every_workflow_reads_as_github_reads_it(workflows):
    assert workflows, "no workflow in .github/workflows/"
    for name, workflow in workflows.items():
        assert isinstance(workflow, dict), name
        assert workflow.get("name"), f"{name}: no name"
        assert "on" in workflow, f"{name}: no trigger (the key `on` must stay a string key)"
        assert workflow.get("jobs"), f"{name}: no jobs"


def test_each_branch_has_its_pipeline_and_a_push_to_master_starts_none(workflows):
    assert_holds(shape.check_triggers(workflows))


def test_dev_and_test_run_fmt_clippy_the_tests_on_postgresql_and_the_linters(workflows):
    assert_holds(shape.check_full_checks(workflows))


def test_master_is_fast_forwarded_only_after_the_checks_pass_then_the_release_starts(workflows):
    assert_holds(shape.check_promotion(workflows))


def test_the_release_builds_tests_the_container_then_pushes_the_sha_to_ecr_through_oidc(workflows):
    assert_holds(shape.check_release(workflows))


def test_the_master_pipeline_takes_the_promoted_commit_and_releases_master_only(workflows):
    master = workflows["master.yml"]
    inputs = shape.triggers(master)["workflow_dispatch"]["inputs"]
    assert inputs["sha"]["required"] is False
    release = shape.job(workflows, "master.yml", "release")
    gate = shape.job(workflows, "master.yml", "gate")
    assert release.needs == ["gate"]
    assert release.body["if"] == "needs.gate.outputs.release == 'true'"
    assert gate.permissions == {}
    assert "${{ inputs.sha }}" in str(gate.steps[0].get("env"))


def test_each_job_is_granted_only_what_it_uses(workflows):
    assert_holds(shape.check_permissions(workflows))


def test_id_token_write_only_where_the_oidc_login_runs(workflows):
    granted = [j.name for j in shape.jobs(workflows) if (j.permissions or {}).get("id-token") == "write"]
    assert granted == ["master.yml:release"]


def test_contents_write_only_on_the_merge_job(workflows):
    granted = [j.name for j in shape.jobs(workflows) if (j.permissions or {}).get("contents") == "write"]
    assert granted == ["test.yml:promote"]


def test_two_releases_never_race(workflows):
    assert_holds(shape.check_concurrency(workflows))


def test_actions_are_pinned_to_full_versions_and_images_to_versions(workflows):
    assert_holds(shape.check_pinned_actions(workflows))


def test_cargo_registry_and_target_are_cached_wherever_rust_is_compiled(workflows):
    assert_holds(shape.check_cargo_caching(workflows))


def test_every_make_target_script_and_file_a_workflow_calls_exists(workflows):
    assert_holds(shape.check_references(workflows))


def test_values_reach_scripts_through_env_and_every_reference_resolves(workflows):
    assert_holds(shape.check_expressions(workflows))


def test_scripts_run_under_bash_with_pipefail(workflows):
    for name, workflow in workflows.items():
        if any(j.runs() for j in shape.jobs({name: workflow})):
            assert (workflow.get("defaults") or {}).get("run", {}).get("shell") == "bash", name


def test_the_makefile_has_the_target_that_runs_this_suite():
    targets = shape.makefile_targets(shape.ROOT / "Makefile")
    assert targets.get("test-workflows") == ["scripts/test-workflows.sh"]


def _run_blocks():
    for name, workflow in shape.load_workflows().items():
        for j in shape.jobs({name: workflow}):
            for index, step in enumerate(j.steps):
                if "run" in step:
                    yield pytest.param(step["run"], id=f"{j.name}:{index + 1}")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", list(_run_blocks()))
def test_every_run_block_passes_shellcheck(script):
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--format=gcc", "-"],
        input="#!/usr/bin/env bash\n" + script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
