"""`sam local invoke DeployFunction -e events/ecr-*.json` against moto's server: the SSM command
functions/deploy/tests/deploy/moto.rs expects, and the refusals functions/deploy/src/error.rs
promises (errorType Deploy.Refused, "not retried", nothing sent)."""

import json

import boto3
import pytest

from conftest import EVENTS, MOTO_SEED

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def ssm(moto):
    return boto3.client(
        "ssm",
        endpoint_url=moto["endpoint"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def commands(ssm):
    return ssm.list_commands()["Commands"]


@pytest.fixture(scope="module")
def pushed(invoke, ssm):
    before = len(commands(ssm))
    invoked = invoke("DeployFunction", EVENTS / "ecr-push.json")
    return invoked, before


def test_a_push_sends_the_deploy_document_to_the_tagged_instances_and_reports_each(pushed, moto, ssm):
    invoked, before = pushed
    reply = invoked.reply
    image = f"{REGISTRY}/latchkey-api@{MOTO_SEED['digest']}"
    assert "errorType" not in reply, invoked.stderr
    assert sorted(reply) == ["command_id", "image", "instances"]
    assert reply["image"] == image
    assert sorted(i["id"] for i in reply["instances"]) == sorted(moto["instances"])
    assert all(i["status"] == "Success" for i in reply["instances"])

    # What moto's SSM recorded: exactly one new command, the one the function reported.
    listed = commands(ssm)
    assert len(listed) == before + 1
    command = ssm.list_commands(CommandId=reply["command_id"])["Commands"][0]
    assert command["DocumentName"] == moto["document"] == "latchkey-deploy"
    assert command["Targets"] == [{"Key": "tag:latchkey-role", "Values": ["api"]}]
    assert command["Parameters"] == {"image": [image]}
    assert command["MaxConcurrency"] == "1"
    assert command["MaxErrors"] == "0"
    assert command["TimeoutSeconds"] == 900
    assert "latchkey-api:v1.4.2" in command["Comment"]
    # The untagged instance never got it.
    invocations = ssm.list_command_invocations(CommandId=reply["command_id"])["CommandInvocations"]
    assert sorted(i["InstanceId"] for i in invocations) == sorted(moto["instances"])
    assert not set(moto["untagged"]) & {i["InstanceId"] for i in invocations}


@pytest.mark.parametrize(
    "event, says",
    [
        ("ecr-delete.json", 'action-type "DELETE"'),
        ("ecr-push-failed.json", 'result "FAILURE"'),
        # Not an ECR event at all: an API Gateway request sent to the wrong function.
        ("auth-register.json", "not an EventBridge event"),
    ],
)
def test_an_event_it_does_not_deploy_is_refused_and_sends_nothing(invoke, ssm, pushed, event, says):
    before = len(commands(ssm))
    invoked = invoke("DeployFunction", EVENTS / event)
    assert invoked.reply["errorType"] == "Deploy.Refused", invoked.reply
    assert "refused (nothing deployed, not retried)" in invoked.reply["errorMessage"]
    assert says in invoked.reply["errorMessage"]
    assert len(commands(ssm)) == before


def test_a_digest_ecr_does_not_have_is_not_deployable_and_sends_nothing(invoke, ssm, pushed, tmp_path):
    event = json.loads((EVENTS / "ecr-push.json").read_text())
    event["detail"]["image-digest"] = "sha256:" + "0" * 64
    path = tmp_path / "unknown-digest.json"
    path.write_text(json.dumps(event))
    before = len(commands(ssm))
    invoked = invoke("DeployFunction", path)
    assert invoked.reply["errorType"] == "Deploy.ImageNotDeployable", invoked.reply
    assert "ImageNotFoundException" in invoked.reply["errorMessage"]
    assert len(commands(ssm)) == before
