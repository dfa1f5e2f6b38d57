"""template.yaml's deploy path, both routes: the EventBridge rule, the two SSM documents and the
deploy Lambda's permissions. moto's CloudFormation cannot run the SAM transform, so the rule and
IAM are read from the template (with its !Sub filled in as CloudFormation would), and the two
documents are created in moto's SSM from the template's content and read back."""

import json
import re

import pytest
import yaml

from conftest import ROOT, CfnLoader

PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
    "DeployDocument": "latchkey-DeployDocument-AbC123",
    "FrontendDeployDocument": "latchkey-FrontendDeployDocument-XyZ789",
}


@pytest.fixture(scope="module")
def sam():
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)  # noqa: S506
    # The parameters' defaults, as a stack created without overrides has them.
    values = {k: str(v.get("Default")) for k, v in template["Parameters"].items()}
    return template, {**values, **PARAMETERS}


def sub(text, values):
    """Fn::Sub's ${Name} filled in from `values` (every name must be known)."""
    return re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda m: values[m.group(1)], text)


def resolve(node, values):
    """!Ref and !Sub (string form) resolved; anything else is left as it is."""
    if isinstance(node, dict) and set(node) == {"Ref"}:
        return values[node["Ref"]]
    if isinstance(node, dict) and set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
        return sub(node["Fn::Sub"], values)
    if isinstance(node, list):
        return [resolve(n, values) for n in node]
    if isinstance(node, dict):
        return {k: resolve(v, values) for k, v in node.items()}
    return node


def test_the_rule_takes_pushes_of_both_repositories(sam):
    template, values = sam
    function = template["Resources"]["DeployFunction"]["Properties"]
    pattern = resolve(function["Events"]["EcrPush"]["Properties"]["Pattern"], values)
    assert pattern["detail"]["repository-name"] == ["latchkey-api", "latchkey-frontend"]
    assert pattern["detail"]["action-type"] == ["PUSH"]
    assert pattern["detail"]["result"] == ["SUCCESS"]
    env = resolve(function["Environment"]["Variables"], values)
    assert env["DEPLOY_REPOSITORY"] == "latchkey-api"
    assert env["DEPLOY_DOCUMENT"] == PARAMETERS["DeployDocument"]
    assert (env["DEPLOY_TARGET_TAG_KEY"], env["DEPLOY_TARGET_TAG_VALUE"]) == ("latchkey-role", "api")
    assert env["DEPLOY_FRONTEND_REPOSITORY"] == "latchkey-frontend"
    assert env["DEPLOY_FRONTEND_DOCUMENT"] == PARAMETERS["FrontendDeployDocument"]
    # The front-end host's tag value in infra/environment.yaml's default, too.
    environment = yaml.load((ROOT / "infra" / "environment.yaml").read_text(), Loader=CfnLoader)  # noqa: S506
    assert env["DEPLOY_FRONTEND_TARGET_TAG_VALUE"] == environment["Parameters"]["FrontendTagValue"]["Default"] == "web"
    assert environment["Parameters"]["FrontendRepositoryName"]["Default"] == env["DEPLOY_FRONTEND_REPOSITORY"]


def test_the_lambda_may_send_only_the_two_documents_to_only_the_tagged_instances(sam):
    template, values = sam
    policy = template["Resources"]["DeploySendCommandPolicy"]["Properties"]["PolicyDocument"]
    statements = json.loads(sub(policy["Fn::Sub"], values))["Statement"]
    assert all(s["Effect"] == "Allow" and s["Action"] == "ssm:SendCommand" for s in statements)
    documents, instances = statements
    assert documents["Resource"] == [
        f"arn:aws:ssm:us-east-1:123456789012:document/{PARAMETERS['DeployDocument']}",
        f"arn:aws:ssm:us-east-1:123456789012:document/{PARAMETERS['FrontendDeployDocument']}",
    ]
    assert "Condition" not in documents
    assert instances["Resource"] == "arn:aws:ec2:us-east-1:123456789012:instance/*"
    assert instances["Condition"] == {
        "StringEquals": {"ssm:resourceTag/latchkey-role": ["api", "web"]}
    }
    # DescribeImages on the two repositories, nothing else with a resource.
    inline = template["Resources"]["DeployFunction"]["Properties"]["Policies"][0]["Statement"]
    [describe] = [s for s in inline if s["Action"] == "ecr:DescribeImages"]
    assert resolve(describe["Resource"], values) == [
        "arn:aws:ecr:us-east-1:123456789012:repository/latchkey-api",
        "arn:aws:ecr:us-east-1:123456789012:repository/latchkey-frontend",
    ]


def test_the_two_routes_cannot_share_hosts_or_a_repository(sam):
    template, _values = sam
    assertions = template["Rules"]["FrontendAndBackendAreDifferentHosts"]["Assertions"]
    compared = [a["Assert"]["Fn::Not"][0]["Fn::Equals"] for a in assertions]
    assert compared == [
        [{"Ref": "FrontendTagValue"}, {"Ref": "BackendTagValue"}],
        [{"Ref": "FrontendRepositoryName"}, {"Ref": "RepositoryName"}],
    ]


@pytest.mark.parametrize(
    ("resource", "script"),
    [
        ("DeployDocument", "/usr/local/sbin/latchkey-deploy"),
        ("FrontendDeployDocument", "/usr/local/sbin/latchkey-frontend-deploy"),
    ],
)
def test_each_document_runs_its_host_script_with_the_checked_image_only(aws, sam, resource, script):
    template, _values = sam
    content = template["Resources"][resource]["Properties"]["Content"]
    ssm = aws("ssm")
    ssm.create_document(
        Name=f"test-{resource}", Content=json.dumps(content), DocumentType="Command",
        DocumentFormat="JSON",
    )
    stored = ssm.describe_document(Name=f"test-{resource}")["Document"]
    assert [p["Name"] for p in stored["Parameters"]] == ["image"]
    back = json.loads(ssm.get_document(Name=f"test-{resource}", DocumentFormat="JSON")["Content"])
    [step] = back["mainSteps"]
    assert step["action"] == "aws:runShellScript"
    assert step["inputs"]["runCommand"] == [f"exec {script} deploy '{{{{ image }}}}'"]
    pattern = back["parameters"]["image"]["allowedPattern"]
    # The same pattern in both documents (and, by functions/deploy/tests, in the Lambda and the
    # host scripts): a digest reference, nothing a shell would read.
    other = "FrontendDeployDocument" if resource == "DeployDocument" else "DeployDocument"
    assert pattern == template["Resources"][other]["Properties"]["Content"]["parameters"]["image"]["allowedPattern"]
    good = "123456789012.dkr.ecr.us-east-1.amazonaws.com/latchkey-frontend@sha256:" + "a" * 64
    assert re.search(pattern, good)
    for bad in (good + ";id", good.replace("@sha256", ":latest@sha256"), "latchkey-frontend:v1"):
        assert not re.search(pattern, bad), bad


def samconfig_overrides():
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    overrides = config["default"]["deploy"]["parameters"]["parameter_overrides"]
    return dict(o.split("=", 1) for o in overrides)


def test_the_deploy_lambda_reserves_no_concurrency_unless_asked(sam):
    """A new account (concurrency limit 10) refuses any reservation and the stack rolls back: the
    default `sam deploy` (samconfig.toml), the parameter's default and scripts/deploy-aws.sh all
    reserve nothing, and only DeployReservedConcurrency=1 sets ReservedConcurrentExecutions."""
    template, _values = sam
    parameter = template["Parameters"]["DeployReservedConcurrency"]
    assert parameter["Default"] == 0
    assert (parameter["MinValue"], parameter["MaxValue"]) == (0, 1)
    assert samconfig_overrides()["DeployReservedConcurrency"] == "0"
    assert template["Conditions"]["SerialDeploys"] == {"Fn::Equals": [{"Ref": "DeployReservedConcurrency"}, 1]}
    function = template["Resources"]["DeployFunction"]["Properties"]
    assert function["ReservedConcurrentExecutions"] == {"Fn::If": ["SerialDeploys", 1, {"Ref": "AWS::NoValue"}]}
    # Nothing else in the template reserves concurrency for it (a Globals section, say).
    assert "ReservedConcurrentExecutions" not in template.get("Globals", {}).get("Function", {})
    deploy_aws = (ROOT / "scripts" / "deploy-aws.sh").read_text()
    for line in deploy_aws.splitlines():
        if "DeployReservedConcurrency" in line:
            assert "DeployReservedConcurrency=0" in line or "DEPLOY_RESERVED_CONCURRENCY" in line, line


def test_the_auth_lambda_reads_its_smtp_url_from_the_mail_secret_never_from_a_parameter(sam):
    template, _values = sam
    env = template["Resources"]["AuthFunction"]["Properties"]["Environment"]["Variables"]
    # Versioned when deploy-aws.sh names the version: CloudFormation re-resolves a reference only
    # when the template or a parameter changes, so a rotated key reaches the Lambda this way.
    assert env["SMTP_URL"] == {"Fn::If": [
        "AuthSendsMail",
        {"Fn::If": [
            "MailSecretVersioned",
            {"Fn::Sub": "{{resolve:secretsmanager:${MailSmtpSecretArn}:SecretString:smtp_url::${MailSecretVersionId}}}"},
            {"Fn::Sub": "{{resolve:secretsmanager:${MailSmtpSecretArn}:SecretString:smtp_url}}"},
        ]},
        {"Ref": "AWS::NoValue"},
    ]}
    assert template["Conditions"]["MailSecretVersioned"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "MailSecretVersionId"}, ""]}]}
    version = template["Parameters"]["MailSecretVersionId"]["AllowedPattern"]
    assert re.match(version, "EXAMPLE1-90ab-cdef-fedc-ba987SECRET1") and not re.match(version, "AWSCURRENT x")
    assert env["MAIL_FROM"] == {"Fn::If": ["AuthMailFrom", {"Ref": "MailFrom"}, {"Ref": "AWS::NoValue"}]}
    assert template["Conditions"]["AuthSendsMail"] == {"Fn::And": [
        {"Condition": "WithAuthFunction"}, {"Fn::Not": [{"Fn::Equals": [{"Ref": "MailSmtpSecretArn"}, ""]}]},
    ]}
    # An ARN, not a secret: no SMTP parameter takes a password.
    parameter = template["Parameters"]["MailSmtpSecretArn"]
    assert parameter["Default"] == ""
    assert re.match(parameter["AllowedPattern"], "arn:aws:secretsmanager:eu-west-1:123456789012:secret:MailSmtpSecret-AbC123")
    assert not re.match(parameter["AllowedPattern"], "smtps://AKIA:password@email-smtp.eu-west-1.amazonaws.com:465")
    assert not [name for name in template["Parameters"] if "smtp" in name.lower() and name != "MailSmtpSecretArn"]
    # scripts/deploy-aws.sh writes smtp_url into the secret from the sender's key, and passes the
    # secret's ARN (and the sender) on.
    deploy_aws = (ROOT / "scripts" / "deploy-aws.sh").read_text()
    assert "infra/host/ses_smtp.py" in deploy_aws
    assert '"MailSmtpSecretArn=' in deploy_aws and '"MailFrom=' in deploy_aws
    assert '"MailSecretVersionId=$mail_secret_version"' in deploy_aws
