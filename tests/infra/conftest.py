"""The environment stack (infra/environment.yaml) created on moto's server, once per session.

moto's server emulates CloudFormation on top of its EC2, RDS, IAM, ECR, S3, SSM and Secrets
Manager: CreateStack really creates the VPC, subnets, routes, groups, instances, roles and the
database in moto, and the tests read them back with boto3, as they would on AWS.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "environment.yaml"
REGION = "us-east-1"

PARAMETERS = {
    "GitHubOwner": "latchkey-org",
    "GitHubRepo": "latchkey",
    "GitHubOwnerId": "1234567",
    "GitHubRepoId": "7654321",
}


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short forms (!Ref, !Sub, ...) as {"Fn::...": ...} maps."""


def _short_form(loader, suffix, node):
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _short_form)


@pytest.fixture(scope="session")
def template():
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    port = _free_port()
    log = open(os.environ.get("MOTO_LOG", os.devnull), "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError("moto's server exited at start")
            time.sleep(0.1)
    else:
        server.kill()
        raise RuntimeError("moto's server did not listen within 30 s")
    yield endpoint
    server.terminate()
    server.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session")
def aws(moto_endpoint):
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return lambda service: session.client(service, endpoint_url=moto_endpoint)


# What moto's CloudFormation (moto 5.2, scripts/requirements/lambda-tools.txt) does not create.
# test_template.py checks these resources in the template itself, and test_what_moto_does_not_create
# checks this list against moto, so it stays true when moto changes.
#
# Taken out of the template moto gets, because other resources read their attributes (the
# distribution's DomainName is the issuer): replaced by what AWS would answer.
CDN_DOMAIN = "d111111abcdef8.cloudfront.net"
REMOVED_FOR_MOTO = {"Cdn": "AWS::CloudFront::Distribution"}
# Accepted and skipped: CreateStack completes, but the resource is not created (nor listed among
# the stack's resources): no secret in moto's Secrets Manager, no identity in its SES, no GitHub
# OIDC provider in its IAM, no bucket policy, and no egress rule of its own (the groups' inline
# rules are created).
SKIPPED_BY_MOTO = {
    "AWS::SecretsManager::Secret", "AWS::SES::EmailIdentity", "AWS::IAM::OIDCProvider",
    "AWS::S3::BucketPolicy", "AWS::EC2::SecurityGroupEgress",
}
NOT_IN_MOTO = {*REMOVED_FOR_MOTO.values(), *SKIPPED_BY_MOTO}


def template_for_moto():
    text = TEMPLATE.read_text()
    for logical_id in REMOVED_FOR_MOTO:
        start = text.index(f"\n  {logical_id}:\n")
        end = text.index("\n  # ----", start)
        text = text[:start] + text[end:]
    return text.replace("${Cdn.DomainName}", CDN_DOMAIN)


def create_stack(aws, name, **overrides):
    cfn = aws("cloudformation")
    parameters = {**PARAMETERS, **overrides}
    cfn.create_stack(
        StackName=name,
        TemplateBody=template_for_moto(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    deadline = time.monotonic() + 60
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS"):
            break
        assert time.monotonic() < deadline, "the stack is still in progress after 60 s"
        time.sleep(0.2)
    events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    failed = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}" for e in events if e["ResourceStatus"].endswith("FAILED")]
    assert stack["StackStatus"] == "CREATE_COMPLETE", (stack["StackStatus"], failed)
    resources = {
        r["LogicalResourceId"]: r
        for r in cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
    }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return {"stack": stack, "resources": resources, "outputs": outputs}


@pytest.fixture(scope="session")
def stack(aws):
    """The default stack: one back-end host, a NAT gateway."""
    return create_stack(aws, "latchkey-env")


@pytest.fixture(scope="session")
def stack_four(aws):
    """Four back-end hosts, interface endpoints instead of NAT, another VPC range, mail (SES)."""
    return create_stack(
        aws, "latchkey-env-two", BackendCount="4", PrivateEgress="endpoints", MailDomain="mail.example.com",
        VpcCidr="10.42.0.0/16", RepositoryName="latchkey-api-two",
        FrontendRepositoryName="latchkey-frontend-two",
        CreateGitHubOidcProvider="false",
    )
