"""What moto does not create or does not report, read from infra/environment.yaml itself."""

from conftest import NOT_IN_MOTO


def resources(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_moto_lacks_only_cloudfront(template):
    assert NOT_IN_MOTO == {"Cdn": "AWS::CloudFront::Distribution"}
    assert template["Resources"]["Cdn"]["Type"] == NOT_IN_MOTO["Cdn"]


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
    assert r["BackendInstanceB"]["Properties"]["SecurityGroupIds"] == [{"Ref": "BackendSecurityGroup"}]
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


def test_the_back_end_reads_exactly_the_two_secrets(template):
    statements = template["Resources"]["BackendRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    [secrets] = [s for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]
    assert secrets["Resource"] == [{"Ref": "DatabaseSecret"}, {"Ref": "KeyEncryptionSecret"}]
