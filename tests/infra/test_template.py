"""What moto does not create or does not report, read from infra/environment.yaml itself."""

import json

from moto.cloudformation.parsing import get_model_map

from conftest import NOT_IN_MOTO, REMOVED_FOR_MOTO


def resources(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_what_moto_does_not_create_is_named(template):
    """The template's resource types that moto's CloudFormation has no model for are exactly the
    ones conftest.py names (and the docs, docs/deploy.md's "Tested offline"): a newer moto that
    learns one, or a new resource type moto lacks, fails here until the list says so."""
    types = {r["Type"] for r in template["Resources"].values()}
    assert {t for t in types if t not in get_model_map()} == NOT_IN_MOTO
    for logical_id, kind in REMOVED_FOR_MOTO.items():
        assert template["Resources"][logical_id]["Type"] == kind


def test_back_end_hosts_one_to_four_each_with_its_condition(template):
    assert template["Parameters"]["BackendCount"]["AllowedValues"] == [1, 2, 3, 4]
    assert template["Parameters"]["BackendCount"]["Default"] == 1
    r = template["Resources"]
    assert "Condition" not in r["BackendInstanceA"]
    assert [r[f"BackendInstance{x}"]["Condition"] for x in "BCD"] == ["AtLeastTwoBackends", "AtLeastThreeBackends", "FourBackends"]
    assert not [k for k, v in r.items() if v["Type"] == "AWS::EC2::Instance" and k.startswith("BackendInstance") and k[-1] not in "ABCD"]
    # Each count switches on exactly its hosts (the conditions, evaluated as CloudFormation does).
    conditions = template["Conditions"]

    def holds(name, count):
        c = conditions[name]
        if "Fn::Equals" in c:
            return str(count) == str(c["Fn::Equals"][1])
        return any(holds(x["Condition"], count) if "Condition" in x else str(count) == str(x["Fn::Equals"][1]) for x in c["Fn::Or"])

    for count in (1, 2, 3, 4):
        on = ["A"] + [x for x in "BCD" if holds(r[f"BackendInstance{x}"]["Condition"], count)]
        assert on == list("ABCD")[:count], count


def test_cloudfront_serves_https_from_the_front_end_without_caching_and_passes_viewer_headers(template):
    config = template["Resources"]["Cdn"]["Properties"]["DistributionConfig"]
    [origin] = config["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": ["FrontendInstance", "PublicDnsName"]}
    assert origin["CustomOriginConfig"]["HTTPPort"] == 80
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
    assert behaviour["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # CachingDisabled
    assert behaviour["OriginRequestPolicyId"] == "b689b0a8-53d0-40ab-baf2-68738e2966ac"  # AllViewerExceptHostHeader
    assert {"POST", "DELETE"} <= set(behaviour["AllowedMethods"])


def test_the_database_keeps_a_snapshot_and_its_password_never_appears(template):
    db = template["Resources"]["Database"]
    assert db["DeletionPolicy"] == "Snapshot" and db["UpdateReplacePolicy"] == "Snapshot"
    password = db["Properties"]["MasterUserPassword"]
    assert password == {"Fn::Sub": "{{resolve:secretsmanager:${DatabaseSecret}:SecretString:password}}"}
    assert "GenerateSecretString" in template["Resources"]["DatabaseSecret"]["Properties"]
    for name, parameter in template["Parameters"].items():
        assert "password" not in name.lower(), name


def test_hosts_require_imdsv2_and_have_no_key_pair(template):
    for name, lt in resources(template, "AWS::EC2::LaunchTemplate").items():
        data = lt["Properties"]["LaunchTemplateData"]
        assert data["MetadataOptions"]["HttpTokens"] == "required", name
        assert "KeyName" not in data, name
        assert all(d["Ebs"]["Encrypted"] for d in data["BlockDeviceMappings"]), name
    for name, inst in resources(template, "AWS::EC2::Instance").items():
        assert "KeyName" not in inst["Properties"], name
        assert "LaunchTemplate" in inst["Properties"], name


def test_the_private_subnets_never_route_to_the_internet_gateway(template):
    routes = resources(template, "AWS::EC2::Route")
    for name, route in routes.items():
        if route["Properties"]["RouteTableId"] == {"Ref": "PrivateRouteTable"}:
            assert "GatewayId" not in route["Properties"], name


# What moto's CloudFormation accepts but does not apply, checked where it is written.

def test_the_database_group_sends_nothing_and_the_database_uses_it(template):
    sg = template["Resources"]["DatabaseSecurityGroup"]["Properties"]
    assert sg["SecurityGroupEgress"] == [{
        "Description": "nothing (a placeholder rule that matches no traffic)",
        "IpProtocol": "icmp", "FromPort": 252, "ToPort": 86, "CidrIp": "255.255.255.255/32"}]
    db = template["Resources"]["Database"]["Properties"]
    assert db["VPCSecurityGroups"] == [{"Ref": "DatabaseSecurityGroup"}]


def test_each_host_is_in_its_own_group(template):
    r = template["Resources"]
    assert r["BackendInstanceA"]["Properties"]["SecurityGroupIds"] == [{"Ref": "BackendSecurityGroup"}]
    for x in "ABCD":
        assert r[f"BackendInstance{x}"]["Properties"]["SecurityGroupIds"] == [{"Ref": "BackendSecurityGroup"}], x
    [nic] = r["FrontendInstance"]["Properties"]["NetworkInterfaces"]
    assert nic["GroupSet"] == [{"Ref": "FrontendSecurityGroup"}] and nic["AssociatePublicIpAddress"] is True
    assert nic["SubnetId"] == {"Ref": "PublicSubnetA"}


def test_host_roles_have_the_ssm_core_policy_and_no_other_managed_policy(template):
    for role in ("BackendRole", "FrontendRole"):
        arns = template["Resources"][role]["Properties"]["ManagedPolicyArns"]
        assert arns == [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}], role


def test_the_release_role_trusts_github_s_provider(template):
    [statement] = template["Resources"]["ReleaseRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    federated = statement["Principal"]["Federated"]["Fn::If"]
    assert federated[0] == "CreateOidcProvider"
    assert federated[1] == {"Ref": "GitHubOidcProvider"}
    assert federated[2]["Fn::Sub"].endswith(":oidc-provider/token.actions.githubusercontent.com")
    provider = template["Resources"]["GitHubOidcProvider"]["Properties"]
    assert provider["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["ClientIdList"] == ["sts.amazonaws.com"]


def test_the_repository_scans_on_push_and_the_bucket_is_not_public(template):
    for name in ("Repository", "FrontendRepository"):
        repo = template["Resources"][name]["Properties"]
        assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True}, name
        assert '"type": "expire"' in repo["LifecyclePolicy"]["LifecyclePolicyText"], name
    block = template["Resources"]["ArtifactsBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True)


def test_the_back_end_reads_exactly_its_secrets_and_the_mail_key_only_with_mail(template):
    statements = template["Resources"]["BackendRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    [secrets] = [s for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]
    both = [{"Ref": "DatabaseSecret"}, {"Ref": "KeyEncryptionSecret"}]
    assert secrets["Resource"] == {"Fn::If": ["SendMail", [*both, {"Ref": "MailSmtpSecret"}], both]}


def test_the_mail_secret_holds_the_sender_s_key_and_the_region_s_smtp_endpoint(template):
    """moto skips the secret and the SES identity (SKIPPED_BY_MOTO): what they hold, read here."""
    r = template["Resources"]
    assert r["MailIdentity"]["Condition"] == r["MailSmtpSecret"]["Condition"] == "SendMail"
    assert r["MailIdentity"]["Properties"] == {"EmailIdentity": {"Ref": "MailDomain"}, "DkimAttributes": {"SigningEnabled": True}}
    secret = json.loads(r["MailSmtpSecret"]["Properties"]["SecretString"]["Fn::Sub"])
    assert secret == {
        "access_key_id": "${MailSenderKey}",
        "secret_access_key": "${MailSenderKey.SecretAccessKey}",
        "smtp_host": "email-smtp.${AWS::Region}.amazonaws.com",
        "mail_domain": "${MailDomain}",
    }
    [statement] = r["MailSender"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "ses:SendRawEmail")
    assert statement["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${MailDomain}"}
    output = template["Outputs"]["MailSmtpSecretArn"]
    assert output["Condition"] == "SendMail" and output["Value"] == {"Ref": "MailSmtpSecret"}
