"""Each check, run on a copy of the workflows broken on purpose, notices the mistake.

The checks in pipeline_shape.py pass on the real workflows; these tests prove that they would not
pass on a wrong one, so that a green run means something.
"""

import copy
import re

import pytest

import pipeline_shape as shape


@pytest.fixture
def broken(workflows):
    return copy.deepcopy(workflows)


def steps(workflows, workflow, job_id):
    return workflows[workflow]["jobs"][job_id]["steps"]


def find(step_list, pattern):
    for index, step in enumerate(step_list):
        if re.search(pattern, step.get("run", "") + step.get("uses", "")):
            return index
    raise AssertionError(f"no step matches {pattern}")


def assert_flags(problems, fragment):
    assert any(fragment in problem for problem in problems), problems


# -- promotion ----------------------------------------------------------------------------------


def test_a_promotion_that_does_not_wait_for_the_checks_is_caught(broken):
    del broken["test.yml"]["jobs"]["promote"]["needs"]
    assert_flags(shape.check_promotion(broken), "must need the checks job")


def test_a_promotion_that_runs_whatever_the_checks_said_is_caught(broken):
    broken["test.yml"]["jobs"]["promote"]["if"] = "always() && github.ref == 'refs/heads/test'"
    assert_flags(shape.check_promotion(broken), "when the checks did not pass")


def test_a_forced_push_to_master_is_caught(broken):
    promote = steps(broken, "test.yml", "promote")
    index = find(promote, r"git push")
    promote[index]["run"] = promote[index]["run"].replace(
        'git push origin "$GITHUB_SHA:refs/heads/master"', 'git push --force origin "$GITHUB_SHA:refs/heads/master"'
    )
    assert_flags(shape.check_promotion(broken), "not a fast-forward-only push")


def test_starting_the_release_before_the_fast_forward_is_caught(broken):
    promote = steps(broken, "test.yml", "promote")
    push, dispatch = find(promote, r"git push"), find(promote, r"gh workflow run")
    promote[push], promote[dispatch] = promote[dispatch], promote[push]
    assert_flags(shape.check_promotion(broken), "after the fast-forward")


def test_a_promotion_that_starts_no_release_is_caught(broken):
    promote = steps(broken, "test.yml", "promote")
    del promote[find(promote, r"gh workflow run")]
    assert_flags(shape.check_promotion(broken), "does not start the master pipeline")


def test_a_second_job_pushing_to_git_is_caught(broken):
    steps(broken, "checks.yml", "infra").append({"run": "git push origin HEAD:refs/heads/dev"})
    assert_flags(shape.check_promotion(broken), "exactly one job")


# -- release ------------------------------------------------------------------------------------


def test_pushing_before_the_container_test_is_caught(broken):
    release = steps(broken, "master.yml", "release")
    test, push = find(release, r"smoke\.py"), find(release, r"docker push")
    release[test], release[push] = release[push], release[test]
    assert_flags(shape.check_release(broken), "in the order")


def test_logging_in_to_aws_before_the_build_is_caught(broken):
    release = steps(broken, "master.yml", "release")
    login = release.pop(find(release, r"configure-aws-credentials"))
    release.insert(0, login)
    assert_flags(shape.check_release(broken), "in the order")


def test_stored_aws_keys_are_caught(broken):
    release = steps(broken, "master.yml", "release")
    login = release[find(release, r"configure-aws-credentials")]
    login["with"]["aws-access-key-id"] = "${{ secrets.AWS_ACCESS_KEY_ID }}"
    problems = shape.check_release(broken)
    assert_flags(problems, "no stored keys")
    assert_flags(problems, "uses a secret")


def test_a_role_written_into_the_workflow_is_caught(broken):
    release = steps(broken, "master.yml", "release")
    release[find(release, r"configure-aws-credentials")]["with"]["role-to-assume"] = "arn:aws:iam::123456789012:role/x"
    assert_flags(shape.check_release(broken), "vars.AWS_ROLE_ARN")


def test_provenance_attestations_left_on_are_caught(broken):
    del broken["master.yml"]["jobs"]["release"]["env"]["BUILDX_NO_DEFAULT_ATTESTATIONS"]
    assert_flags(shape.check_release(broken), "attestations")


def test_a_tag_other_than_the_commit_sha_is_caught(broken):
    release = steps(broken, "master.yml", "release")
    index = find(release, r"docker push")
    release[index]["run"] = release[index]["run"].replace(':$GITHUB_SHA"', ':latest"')
    assert_flags(shape.check_release(broken), "not the commit sha")


def test_a_release_of_any_branch_is_caught(broken):
    gate = steps(broken, "master.yml", "gate")
    gate[0]["run"] = gate[0]["run"].replace('"$GITHUB_REF" != refs/heads/master', "false")
    assert_flags(shape.check_release(broken), "other than master")


def test_an_image_push_from_the_dev_pipeline_is_caught(broken):
    steps(broken, "checks.yml", "rust").append({"run": "docker push example/latchkey:dev"})
    assert_flags(shape.check_release(broken), "only master.yml:release")


# -- permissions and concurrency ------------------------------------------------------------------


def test_id_token_write_on_a_job_without_oidc_is_caught(broken):
    broken["checks.yml"]["jobs"]["rust"]["permissions"]["id-token"] = "write"
    assert_flags(shape.check_permissions(broken), "id-token: write without an OIDC login")


def test_contents_write_on_the_release_is_caught(broken):
    broken["master.yml"]["jobs"]["release"]["permissions"]["contents"] = "write"
    assert_flags(shape.check_permissions(broken), "contents: write is not needed")


def test_a_workflow_wide_grant_is_caught(broken):
    broken["dev.yml"]["permissions"] = "write-all"
    assert_flags(shape.check_permissions(broken), "top-level permissions")


def test_a_job_without_its_own_permissions_is_caught(broken):
    del broken["checks.yml"]["jobs"]["infra"]["permissions"]
    assert_flags(shape.check_permissions(broken), "no permissions of its own")


def test_a_release_that_can_be_cancelled_half_way_is_caught(broken):
    broken["master.yml"]["concurrency"]["cancel-in-progress"] = True
    assert_flags(shape.check_concurrency(broken), "cancel-in-progress must be false")


def test_releases_without_a_concurrency_group_are_caught(broken):
    del broken["master.yml"]["concurrency"]
    assert_flags(shape.check_concurrency(broken), "no concurrency group")


# -- triggers and checks --------------------------------------------------------------------------


def test_a_push_to_master_trigger_is_caught(broken):
    broken["master.yml"]["on"]["push"] = {"branches": ["master"]}
    assert_flags(shape.check_triggers(broken), "runs on a push to master")


def test_a_dev_pipeline_on_the_wrong_branch_is_caught(broken):
    broken["dev.yml"]["on"]["push"]["branches"] = ["main"]
    assert_flags(shape.check_triggers(broken), "dev.yml: triggers")


def test_a_service_database_instead_of_make_tests_own_cluster_is_caught(broken):
    rust = broken["checks.yml"]["jobs"]["rust"]
    rust["services"] = {"postgres": {"image": "postgres:16.4"}}
    rust["env"]["DATABASE_URL"] = "postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable"
    rust["env"]["LATCHKEY_SKIP_TLS_TESTS"] = "1"
    problems = shape.check_full_checks(broken)
    assert_flags(problems, "sets DATABASE_URL")
    assert_flags(problems, "sets LATCHKEY_SKIP_TLS_TESTS")
    assert_flags(problems, "has service containers")


def test_a_job_that_runs_make_test_but_not_ci_run_is_caught(broken):
    rust = steps(broken, "checks.yml", "rust")
    index = find(rust, r"bash \.ci/run")
    rust[index]["run"] = "make test"
    assert_flags(shape.check_full_checks(broken), "does not run the tests (.ci/run)")


def test_the_browser_suite_without_a_chromium_on_ubuntu_is_caught(broken):
    rust = steps(broken, "checks.yml", "rust")
    del rust[find(rust, r"E2E_CHROMIUM=")]
    assert_flags(shape.check_full_checks(broken), "no step names a Chromium")


def test_a_timeout_too_short_for_a_cold_run_is_caught(broken):
    broken["checks.yml"]["jobs"]["rust"]["timeout-minutes"] = 30
    assert_flags(shape.check_full_checks(broken), "a cold run needs about an hour")


def test_a_missing_template_linter_is_caught(broken):
    infra = steps(broken, "checks.yml", "infra")
    index = find(infra, r"cfn-lint template")
    infra[index]["run"] = infra[index]["run"].replace("cfn-lint template.yaml", "true")
    assert_flags(shape.check_full_checks(broken), "does not run cfn-lint")


def test_the_test_pipeline_skipping_the_checks_is_caught(broken):
    del broken["test.yml"]["jobs"]["checks"]
    assert_flags(shape.check_full_checks(broken), "test.yml: does not call checks.yml")


# -- pins, caching, references, expressions -------------------------------------------------------


@pytest.mark.parametrize("uses", ["actions/checkout@v6", "actions/checkout@main", "actions/checkout@v6.0"])
def test_an_action_not_pinned_to_a_full_version_is_caught(broken, uses):
    steps(broken, "checks.yml", "infra")[0]["uses"] = uses
    assert_flags(shape.check_pinned_actions(broken), "not pinned")


def test_a_floating_service_image_is_caught(broken):
    broken["master.yml"]["jobs"]["release"]["services"]["postgres"]["image"] = "postgres:latest"
    assert_flags(shape.check_pinned_actions(broken), "not pinned to a version")


def test_compiling_without_the_cargo_cache_is_caught(broken):
    rust = steps(broken, "checks.yml", "rust")
    del rust[find(rust, r"actions/cache")]
    assert_flags(shape.check_cargo_caching(broken), "without restoring cargo's cache")


def test_a_make_target_that_does_not_exist_is_caught(broken):
    steps(broken, "checks.yml", "infra").append({"run": "make no-such-target"})
    assert_flags(shape.check_references(broken), "`make no-such-target`: the Makefile has no such target")


def test_a_script_that_does_not_exist_is_caught(broken):
    steps(broken, "master.yml", "release").append({"run": "scripts/no-such-script.sh --flag\npython3 tests/nope.py"})
    problems = shape.check_references(broken)
    assert_flags(problems, "scripts/no-such-script.sh does not exist")
    assert_flags(problems, "tests/nope.py does not exist")


def test_dispatching_a_workflow_that_does_not_exist_is_caught(broken):
    promote = steps(broken, "test.yml", "promote")
    index = find(promote, r"gh workflow run")
    promote[index]["run"] = promote[index]["run"].replace("master.yml", "release.yml")
    assert_flags(shape.check_references(broken), "release.yml: no such workflow")


def test_an_expression_inside_a_script_is_caught(broken):
    steps(broken, "checks.yml", "infra").append({"run": "echo ${{ github.event.head_commit.message }}"})
    assert_flags(shape.check_expressions(broken), "an expression inside run")


def test_an_output_read_from_a_job_not_needed_is_caught(broken):
    broken["master.yml"]["jobs"]["release"]["needs"] = []
    assert_flags(shape.check_expressions(broken), "does not need it")


def test_a_step_output_read_before_the_step_is_caught(broken):
    release = steps(broken, "master.yml", "release")
    release.insert(0, release.pop(find(release, r"docker push")))
    assert_flags(shape.check_expressions(broken), "is not an earlier step")


def test_the_yaml_boolean_trap_and_duplicate_keys_are_handled():
    assert shape.load_yaml("on: push\nyes: no\n") == {"on": "push", "yes": "no"}
    with pytest.raises(Exception, match="duplicate key"):
        shape.load_yaml("jobs:\n  a: {}\n  a: {}\n")


def test_make_commands_and_repository_paths_are_read_from_scripts():
    script = "# make commented-out\nmake image IMAGE=x && make -j2 test lint\nscripts/a.sh; python3 tests/b.py > /dev/null\n"
    assert shape.make_invocations(script) == [["image"], ["test", "lint"]]
    assert shape.repo_paths(script) == ["scripts/a.sh", "tests/b.py"]
    assert shape.repo_paths('git fetch origin refs/heads/master "$HOME/x" ./template.yaml') == ["template.yaml"]
