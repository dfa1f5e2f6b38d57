"""The environment as moto built it from infra/environment.yaml, read back with boto3."""

import ast
import base64
import ipaddress
import json
import re

import pytest

from conftest import CDN_DOMAIN, PARAMETERS, ROOT, SKIPPED_BY_MOTO, create_stack


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


def test_with_endpoints_the_private_subnets_have_no_route_out_at_all(aws, stack_four, template):
    for subnet in ("PrivateSubnetA", "PrivateSubnetB"):
        assert routes_to_internet(aws, stack_four, template, subnet) == set(), subnet
    assert "NatGateway" not in stack_four["resources"]
    endpoints = aws("ec2").describe_vpc_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [physical(stack_four, "Vpc")]}]
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


def test_hosts_are_set_up_by_their_user_data_with_the_stack_s_values(aws, stack, stack_four):
    backend = user_data(aws, stack, "BackendInstanceA")
    assert "infra/host/bootstrap.sh backend" in backend
    assert f"--issuer 'https://{CDN_DOMAIN}'" in backend
    assert "--trusted-proxies '127.0.0.1/32,10.0.0.0/16'" in backend
    assert stack["outputs"]["DatabaseEndpoint"] in backend
    assert "password" not in backend.lower()
    # No MailDomain: no mail settings.
    assert "--mail-secret" not in backend
    frontend = user_data(aws, stack, "FrontendInstance")
    assert "infra/host/bootstrap.sh frontend --backends '10.0.2.10:8080'" in frontend
    # It serves the newest front-end image at boot: its repository and registry.
    assert "--repository 'latchkey-frontend'" in frontend
    assert "--registry '123456789012.dkr.ecr.us-east-1.amazonaws.com'" in frontend
    # The trusted range follows the VPC.
    assert "--trusted-proxies '127.0.0.1/32,10.42.0.0/16'" in user_data(aws, stack_four, "BackendInstanceB")


BOOTSTRAP_OPTIONS = set(re.findall(r"^  (--[a-z-]+)\) ", (ROOT / "infra" / "host" / "bootstrap.sh").read_text(), re.M))


def test_every_option_the_user_data_gives_is_one_bootstrap_sh_takes(aws, stack, stack_four):
    assert {"--backends", "--db-secret", "--mail-secret", "--mail-from"} <= BOOTSTRAP_OPTIONS
    for s, logical_id in [(stack, "FrontendInstance"), (stack, "BackendInstanceA"),
                          (stack_four, "FrontendInstance"), (stack_four, "BackendInstanceD")]:
        given = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", user_data(aws, s, logical_id).split("bootstrap.sh", 1)[1]))
        assert given and given <= BOOTSTRAP_OPTIONS, (logical_id, given - BOOTSTRAP_OPTIONS)


# BackendCount: the two private subnets take turns, each host at a fixed address the front-end's
# list names in the same order.
BACKEND_HOSTS = [("BackendInstanceA", "PrivateSubnetA", "2.10"), ("BackendInstanceB", "PrivateSubnetB", "3.10"),
                 ("BackendInstanceC", "PrivateSubnetA", "2.11"), ("BackendInstanceD", "PrivateSubnetB", "3.11")]


def check_backends(aws, s, count, prefix):
    created = [h for h in BACKEND_HOSTS if h[0] in s["resources"]]
    assert [h[0] for h in created] == [h[0] for h in BACKEND_HOSTS[:count]]
    for logical_id, subnet, address in created:
        host = instance(aws, s, logical_id)
        assert host["PrivateIpAddress"] == f"{prefix}.{address}", logical_id
        assert host["SubnetId"] == physical(s, subnet), logical_id
        assert not host.get("PublicIpAddress"), logical_id
        assert {t["Key"]: t["Value"] for t in host["Tags"]}["latchkey-role"] == "api", logical_id
        assert "infra/host/bootstrap.sh backend" in user_data(aws, s, logical_id)
    upstreams = ",".join(f"{prefix}.{h[2]}:8080" for h in BACKEND_HOSTS[:count])
    assert f"--backends '{upstreams}' " in user_data(aws, s, "FrontendInstance")
    # What the deploy Lambda targets: the back-end tag, on exactly these instances.
    tagged = aws("ec2").describe_instances(Filters=[
        {"Name": "tag:latchkey-role", "Values": ["api"]},
        {"Name": "vpc-id", "Values": [physical(s, "Vpc")]},
    ])["Reservations"]
    assert sum(len(r["Instances"]) for r in tagged) == count


def test_one_back_end_by_default(aws, stack):
    check_backends(aws, stack, 1, "10.0")


def test_four_back_ends_in_both_zones_and_the_front_end_spreads_over_all_four(aws, stack_four):
    check_backends(aws, stack_four, 4, "10.42")


@pytest.mark.parametrize("count", [2, 3])
def test_two_and_three_back_ends_and_the_front_end_lists_each(aws, count):
    s = create_stack(
        aws, f"latchkey-env-{count}", BackendCount=str(count), VpcCidr=f"10.{50 + count}.0.0/16",
        RepositoryName=f"latchkey-api-{count}", FrontendRepositoryName=f"latchkey-frontend-{count}",
        CreateGitHubOidcProvider="false",
    )
    check_backends(aws, s, count, f"10.{50 + count}")


# ---------------------------------------------------------------------------------------------
# Mail (MailDomain): what moto creates of it, read back; the rest is in test_template.py.


def test_with_a_mail_domain_the_sender_and_its_access_key_exist(aws, stack_four):
    iam = aws("iam")
    user = physical(stack_four, "MailSender")
    iam.get_user(UserName=user)
    [key] = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    assert key["Status"] == "Active"
    assert key["AccessKeyId"] == physical(stack_four, "MailSenderKey")
    # Its inline policy: moto's CloudFormation does not apply a user's Policies, so
    # test_template.py reads it (ses:SendRawEmail from the domain's identity, nothing else).
    assert not iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]


def test_without_a_mail_domain_nothing_for_mail_exists(stack):
    assert not {"MailIdentity", "MailSender", "MailSenderKey", "MailSmtpSecret"} & set(stack["resources"])
    assert "MailSmtpSecretArn" not in stack["outputs"]


def test_with_a_mail_domain_each_back_end_is_told_the_secret_and_the_sender(aws, stack_four):
    for logical_id in ("BackendInstanceA", "BackendInstanceD"):
        data = user_data(aws, stack_four, logical_id)
        assert "--mail-secret '" in data, logical_id
        assert "--mail-from 'Latchkey <no-reply@mail.example.com>'" in data, logical_id
    # The MailSmtpSecretArn output names a secret moto skips, so moto leaves it out:
    # test_template.py reads it.


def test_what_moto_skips_is_really_not_created(aws, stack_four, template):
    """SKIPPED_BY_MOTO (conftest.py): CreateStack completes, and the resources are neither listed in
    the stack nor created in the service (moto's Secrets Manager and SES stay empty)."""
    skipped = {k for k, r in template["Resources"].items() if r["Type"] in SKIPPED_BY_MOTO}
    assert {"DatabaseSecret", "KeyEncryptionSecret", "MailSmtpSecret", "MailIdentity", "GitHubOidcProvider"} <= skipped
    assert not skipped & set(stack_four["resources"])
    assert aws("secretsmanager").list_secrets()["SecretList"] == []
    assert aws("iam").list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    identities = aws("sesv2").list_email_identities()["EmailIdentities"]
    assert "mail.example.com" not in {i["IdentityName"] for i in identities}
