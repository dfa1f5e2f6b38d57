"""The environment as moto built it from infra/environment.yaml, read back with boto3."""

import ast
import base64
import ipaddress
import json

from conftest import CDN_DOMAIN, PARAMETERS


def physical(stack, logical_id):
    return stack["resources"][logical_id]["PhysicalResourceId"]


def group(aws, stack, logical_id):
    return aws("ec2").describe_security_groups(GroupIds=[physical(stack, logical_id)])["SecurityGroups"][0]


def rules(sg, direction="IpPermissions"):
    """(protocol, from, to, source) for every rule, source a CIDR or a group id."""
    found = set()
    for p in sg[direction]:
        for r in p.get("IpRanges", []):
            found.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"]))
        for r in p.get("UserIdGroupPairs", []):
            found.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["GroupId"]))
    return found


def instance(aws, stack, logical_id):
    reservations = aws("ec2").describe_instances(InstanceIds=[physical(stack, logical_id)])["Reservations"]
    return reservations[0]["Instances"][0]


def routes_to_internet(aws, stack, template, subnet):
    """The targets of the subnet's default route (igw-..., nat-...), or none.

    moto's CloudFormation records a SubnetRouteTableAssociation without associating, so which
    table a subnet uses comes from the template; the table's routes come from moto."""
    [table] = [
        r["Properties"]["RouteTableId"]["Ref"] for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::SubnetRouteTableAssociation"
        and r["Properties"]["SubnetId"] == {"Ref": subnet}
    ]
    tables = aws("ec2").describe_route_tables(RouteTableIds=[physical(stack, table)])["RouteTables"]
    return {
        r.get("GatewayId") or r.get("NatGatewayId")
        for r in tables[0]["Routes"]
        if r.get("DestinationCidrBlock") == "0.0.0.0/0"
    }


def test_the_front_end_takes_port_80_from_anywhere_and_nothing_else(aws, stack):
    sg = group(aws, stack, "FrontendSecurityGroup")
    assert rules(sg) == {("tcp", 80, 80, "0.0.0.0/0")}


def test_the_back_end_takes_the_api_port_from_the_front_end_group_only(aws, stack):
    sg = group(aws, stack, "BackendSecurityGroup")
    frontend = physical(stack, "FrontendSecurityGroup")
    assert rules(sg) == {("tcp", 8080, 8080, frontend)}


def test_the_database_takes_5432_from_the_back_end_group_only(aws, stack):
    sg = group(aws, stack, "DatabaseSecurityGroup")
    assert rules(sg) == {("tcp", 5432, 5432, physical(stack, "BackendSecurityGroup"))}
    # Its egress (a placeholder rule matching no traffic): moto adds its default rule beside the
    # template's, so test_template.py checks it.


def test_no_group_admits_ssh(aws, stack):
    for logical_id in ("FrontendSecurityGroup", "BackendSecurityGroup", "DatabaseSecurityGroup"):
        for protocol, low, high, _ in rules(group(aws, stack, logical_id)):
            assert protocol == "-1" or not (low <= 22 <= high), logical_id
            assert protocol != "-1", logical_id


def test_public_subnets_route_to_the_internet_gateway_and_private_ones_only_through_nat(aws, stack, template):
    igw = physical(stack, "InternetGateway")
    nat = physical(stack, "NatGateway")
    for subnet in ("PublicSubnetA", "PublicSubnetB"):
        assert routes_to_internet(aws, stack, template, subnet) == {igw}, subnet
    for subnet in ("PrivateSubnetA", "PrivateSubnetB"):
        assert routes_to_internet(aws, stack, template, subnet) == {nat}, subnet


def test_with_endpoints_the_private_subnets_have_no_route_out_at_all(aws, stack_two, template):
    for subnet in ("PrivateSubnetA", "PrivateSubnetB"):
        assert routes_to_internet(aws, stack_two, template, subnet) == set(), subnet
    assert "NatGateway" not in stack_two["resources"]
    endpoints = aws("ec2").describe_vpc_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [physical(stack_two, "Vpc")]}]
    )["VpcEndpoints"]
    services = {e["ServiceName"].rsplit(".", 1)[-1] if "ecr" not in e["ServiceName"] else e["ServiceName"].split("us-east-1.")[1] for e in endpoints}
    assert {"ssm", "ssmmessages", "ec2messages", "ecr.api", "ecr.dkr", "logs", "secretsmanager", "sts", "s3"} <= services


def test_subnets_span_two_zones_and_none_hands_out_public_addresses(aws, stack):
    ec2 = aws("ec2")
    ids = [physical(stack, s) for s in ("PublicSubnetA", "PublicSubnetB", "PrivateSubnetA", "PrivateSubnetB")]
    subnets = {s["SubnetId"]: s for s in ec2.describe_subnets(SubnetIds=ids)["Subnets"]}
    assert {subnets[ids[0]]["AvailabilityZone"], subnets[ids[1]]["AvailabilityZone"]} == {
        subnets[ids[2]]["AvailabilityZone"], subnets[ids[3]]["AvailabilityZone"]}
    assert subnets[ids[0]]["AvailabilityZone"] != subnets[ids[1]]["AvailabilityZone"]
    assert not any(s["MapPublicIpOnLaunch"] for s in subnets.values())
    vpc = ipaddress.ip_network("10.0.0.0/16")
    assert all(ipaddress.ip_network(s["CidrBlock"]).subnet_of(vpc) for s in subnets.values())


def test_the_database_is_private_encrypted_and_in_the_private_subnets(aws, stack):
    rds = aws("rds")
    db = rds.describe_db_instances(DBInstanceIdentifier=physical(stack, "Database"))["DBInstances"][0]
    assert db["PubliclyAccessible"] is False
    assert db["StorageEncrypted"] is True
    assert db["Engine"] == "postgres"
    # moto's CloudFormation gives the instance the default group whatever VPCSecurityGroups says:
    # test_template.py checks it.
    subnets = {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]}
    assert subnets == {physical(stack, "PrivateSubnetA"), physical(stack, "PrivateSubnetB")}


def test_the_back_end_is_private_tagged_for_the_deploy_lambda_and_the_front_end_public(aws, stack):
    backend = instance(aws, stack, "BackendInstanceA")
    assert backend["SubnetId"] == physical(stack, "PrivateSubnetA")
    assert backend["PrivateIpAddress"] == "10.0.2.10"
    assert not backend.get("PublicIpAddress")
    assert {t["Key"]: t["Value"] for t in backend["Tags"]}["latchkey-role"] == "api"
    assert backend["IamInstanceProfile"]["Arn"].endswith(physical(stack, "BackendInstanceProfile"))
    # Groups and metadata options: moto ignores SecurityGroupIds and the launch template beside
    # them, so test_template.py checks those.
    assert "BackendInstanceB" not in stack["resources"]

    frontend = instance(aws, stack, "FrontendInstance")
    # Its subnet: moto ignores NetworkInterfaces (test_template.py checks it).
    assert frontend.get("PublicIpAddress")
    assert {t["Key"]: t["Value"] for t in frontend["Tags"]}["latchkey-role"] == "web"
    assert stack["outputs"]["BackendTagKey"] == "latchkey-role"
    assert stack["outputs"]["BackendTagValue"] == "api"


def user_data(aws, stack, logical_id):
    answer = aws("ec2").describe_instance_attribute(
        InstanceId=physical(stack, logical_id), Attribute="userData")
    return base64.b64decode(answer["UserData"]["Value"]).decode()


def test_hosts_are_set_up_by_their_user_data_with_the_stack_s_values(aws, stack, stack_two):
    backend = user_data(aws, stack, "BackendInstanceA")
    assert "infra/host/bootstrap.sh backend" in backend
    assert f"--issuer 'https://{CDN_DOMAIN}'" in backend
    assert "--trusted-proxies '127.0.0.1/32,10.0.0.0/16'" in backend
    assert stack["outputs"]["DatabaseEndpoint"] in backend
    assert "password" not in backend.lower()
    frontend = user_data(aws, stack, "FrontendInstance")
    assert "infra/host/bootstrap.sh frontend --backends '10.0.2.10:8080'" in frontend
    # It serves the newest front-end image at boot: its repository and registry.
    assert "--repository 'latchkey-frontend'" in frontend
    assert "--registry '123456789012.dkr.ecr.us-east-1.amazonaws.com'" in frontend
    # Two back-ends: the front-end spreads over both, the trusted range follows the VPC.
    assert "--backends '10.42.2.10:8080,10.42.3.10:8080'" in user_data(aws, stack_two, "FrontendInstance")
    assert "--trusted-proxies '127.0.0.1/32,10.42.0.0/16'" in user_data(aws, stack_two, "BackendInstanceB")
    b = instance(aws, stack_two, "BackendInstanceB")
    assert b["PrivateIpAddress"] == "10.42.3.10"
    assert b["SubnetId"] == physical(stack_two, "PrivateSubnetB")


def role_policies(aws, role_name):
    iam = aws("iam")
    statements = []
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            document = ast.literal_eval(document)  # moto answers with a Python repr
        statements += document["Statement"]
    managed = {p["PolicyArn"].rsplit("/", 1)[-1] for p in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]}
    return statements, managed


def allowed_actions(aws, role_name):
    """{action: {resources}} of a role's inline policies (all Allow)."""
    statements, _managed = role_policies(aws, role_name)
    allowed = {}
    for s in statements:
        assert s["Effect"] == "Allow"
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        for a in actions:
            allowed.setdefault(a, set()).update(resources)
    return allowed


def repository_arn(aws, name):
    return aws("ecr").describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryArn"]


PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability", "ecr:DescribeImages")


def test_the_back_end_role_may_use_ssm_pull_the_image_and_read_its_secrets_nothing_more(aws, stack):
    # ManagedPolicyArns (SSM core only): moto does not attach them (test_template.py checks it).
    allowed = allowed_actions(aws, physical(stack, "BackendRole"))
    repo = repository_arn(aws, "latchkey-api")
    assert allowed.pop("ecr:GetAuthorizationToken") == {"*"}
    for action in PULL:
        assert allowed.pop(action) == {repo}, action
    # moto's CloudFormation skips AWS::SecretsManager::Secret (no physical id to compare): the two
    # secrets and nothing else, by the template's Refs (test_template.py).
    allowed.pop("secretsmanager:GetSecretValue")
    assert allowed.pop("s3:GetObject") == {f"arn:aws:s3:::{physical(stack, 'ArtifactsBucket')}/host/*"}
    assert allowed == {}


def test_the_front_end_role_may_use_ssm_pull_the_front_end_image_and_read_the_bundle_only(aws, stack):
    # ManagedPolicyArns (SSM core only): moto does not attach them (test_template.py checks it).
    allowed = allowed_actions(aws, physical(stack, "FrontendRole"))
    assert allowed.pop("ecr:GetAuthorizationToken") == {"*"}
    frontend_repo = repository_arn(aws, "latchkey-frontend")
    for action in PULL:
        # The front-end image only: never the API's.
        assert allowed.pop(action) == {frontend_repo}, action
    assert allowed.pop("s3:GetObject") == {f"arn:aws:s3:::{physical(stack, 'ArtifactsBucket')}/host/*"}
    assert allowed == {}


def test_the_release_role_may_push_to_the_two_repositories_and_nothing_else(aws, stack):
    allowed = allowed_actions(aws, physical(stack, "ReleaseRole"))
    assert allowed.pop("ecr:GetAuthorizationToken") == {"*"}
    repos = {repository_arn(aws, "latchkey-api"), repository_arn(aws, "latchkey-frontend")}
    for action in ("ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                   "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage", "ecr:DescribeImages"):
        assert allowed.pop(action) == repos, action
    assert allowed == {}


def test_the_release_role_trusts_both_github_subject_forms_on_master_only(aws, stack):
    role = aws("iam").get_role(RoleName=physical(stack, "ReleaseRole"))["Role"]
    trust = role["AssumeRolePolicyDocument"]
    if isinstance(trust, str):
        trust = json.loads(trust)
    [statement] = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    # The principal (an Fn::If between the new provider and an existing one) comes back empty
    # from moto: test_template.py checks it.
    condition = statement["Condition"]
    assert set(condition) == {"StringEquals"}
    p = PARAMETERS
    assert condition["StringEquals"]["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    assert sorted(condition["StringEquals"]["token.actions.githubusercontent.com:sub"]) == sorted([
        f"repo:{p['GitHubOwner']}/{p['GitHubRepo']}:ref:refs/heads/master",
        f"repo:{p['GitHubOwner']}@{p['GitHubOwnerId']}/{p['GitHubRepo']}@{p['GitHubRepoId']}:ref:refs/heads/master",
    ])


def test_the_ecr_repository_has_immutable_tags_scans_on_push_and_expires_old_images(aws, stack):
    ecr = aws("ecr")
    for name in ("latchkey-api", "latchkey-frontend"):
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        assert repo["imageTagMutability"] == "IMMUTABLE", name
    # Scan on push and the lifecycle policy: moto ignores both from CloudFormation
    # (test_template.py checks them).


def test_the_artifacts_bucket_is_encrypted(aws, stack):
    s3 = aws("s3")
    bucket = physical(stack, "ArtifactsBucket")
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    # The public access block: moto ignores it from CloudFormation (test_template.py checks it).


def test_the_outputs_feed_template_yaml_and_github(stack):
    out = stack["outputs"]
    assert out["Url"] == f"https://{CDN_DOMAIN}"
    assert out["RepositoryName"] == "latchkey-api"
    assert out["FrontendRepositoryName"] == "latchkey-frontend"
    assert out["FrontendRepositoryUri"].endswith("/latchkey-frontend")
    assert out["ReleaseRoleArn"].startswith("arn:aws:iam::")
    for key in ("BackendTagKey", "BackendTagValue", "FrontendTagValue", "ArtifactsBucketName", "VpcCidr"):
        assert out[key]
