"""moto's server for the deploy Lambda's wire tests, `scripts/test-lambda.sh` and local runs.

    python3 moto_server.py [--port PORT] [--seed JSON | --sample]

Starts moto (ECR, SSM, EC2, all in one endpoint) on 127.0.0.1 and a free port (or PORT),
optionally puts the world the deploy Lambda expects in it, prints one JSON line on stdout, and
runs until its standard input closes, so that it dies with whoever started it, however that one
ends. (Run by hand, Ctrl-D or Ctrl-C stops it.)

The printed line: {"endpoint": "http://127.0.0.1:PORT", "region": ..., "digest": "sha256:...",
"document": NAME, "instances": [tagged instance ids], "untagged": [the others]}.

--seed takes {"repository", "tag", "tag_key", "tag_value", "instances": N, "untagged": N} and
optionally "digest"; it creates the repository, pushes one image manifest under the tag (with that
digest when given), creates the SSM document from
template.yaml (the very content CloudFormation would create), and runs N tagged EC2 instances
plus some without the tag, which the command must not reach. --sample seeds what
events/ecr-push.json describes (with template.yaml's default tag), for `cargo lambda invoke` and
`sam local invoke` with that file as it is.

moto has no ListCommandInvocations, which the Lambda uses to learn which instances a tag
resolved to; it is added here from moto's own command model, as AWS answers it.
"""

import argparse
import hashlib
import json
import os
import sys

import boto3
import yaml
from moto.core.responses import ActionResult
from moto.server import ThreadedMotoServer
from moto.ssm.models import ssm_backends
from moto.ssm.responses import SimpleSystemManagerResponse

REGION = "us-east-1"
ACCOUNT = "123456789012"
HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "..", "..", "template.yaml")


def list_command_invocations(self):
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    backend = ssm_backends[self.current_account][self.region]
    commands = backend.list_commands(command_id, None) if command_id else backend._commands
    invocations = []
    for command in commands:
        for invocation in command.invocations:
            if instance_id and invocation["InstanceId"] != instance_id:
                continue
            invocations.append(
                {
                    "CommandId": invocation["CommandId"],
                    "InstanceId": invocation["InstanceId"],
                    "Comment": invocation["Comment"],
                    "DocumentName": invocation["DocumentName"],
                    "RequestedDateTime": command.requested_date_time,
                    "Status": invocation["Status"],
                    "StatusDetails": invocation["StatusDetails"],
                }
            )
    return ActionResult({"CommandInvocations": invocations})


SimpleSystemManagerResponse.list_command_invocations = list_command_invocations


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML: !Ref, !Sub and friends become {"Fn::...": value} maps."""


def _cfn_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {("Ref" if suffix == "Ref" else "Fn::" + suffix): value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def document_content(resource="DeployDocument"):
    """The content of one of template.yaml's SSM documents (DeployDocument, the back-end's, or
    FrontendDeployDocument)."""
    with open(TEMPLATE, encoding="utf-8") as handle:
        template = yaml.load(handle, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass
    return template["Resources"][resource]["Properties"]["Content"]


def seed(endpoint, settings):
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    ecr = session.client("ecr", endpoint_url=endpoint)
    ssm = session.client("ssm", endpoint_url=endpoint)
    ec2 = session.client("ec2", endpoint_url=endpoint)

    repository = settings["repository"]
    ecr.create_repository(repositoryName=repository)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(repository.encode()).hexdigest(),
                "size": 2,
            },
            # moto derives the digest from the layer digests: one per tag, one digest per seed.
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(settings["tag"].encode()).hexdigest(),
                    "size": 1,
                }
            ],
        }
    )
    digest = {"imageDigest": settings["digest"]} if settings.get("digest") else {}
    pushed = ecr.put_image(
        repositoryName=repository, imageManifest=manifest, imageTag=settings["tag"], **digest
    )
    digest = pushed["image"]["imageId"]["imageDigest"]

    document = "latchkey-deploy"
    ssm.create_document(
        Name=document,
        Content=json.dumps(document_content()),
        DocumentType="Command",
        DocumentFormat="JSON",
    )

    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def run(count, tags):
        if count == 0:
            return []
        extra = {}
        if tags:
            extra["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags]}
            ]
        reply = ec2.run_instances(
            ImageId=image_id, MinCount=count, MaxCount=count, InstanceType="t4g.micro", **extra
        )
        return sorted(instance["InstanceId"] for instance in reply["Instances"])

    tagged = run(settings.get("instances", 1), [(settings["tag_key"], settings["tag_value"])])
    untagged = run(settings.get("untagged", 0), [(settings["tag_key"], "something-else")])
    return {"digest": digest, "document": document, "instances": tagged, "untagged": untagged}


def sample_settings():
    with open(os.path.join(HERE, "..", "..", "..", "events", "ecr-push.json"), encoding="utf-8") as f:
        detail = json.load(f)["detail"]
    return {
        "repository": detail["repository-name"],
        "tag": detail["image-tag"],
        "digest": detail["image-digest"],
        "tag_key": "latchkey-role",
        "tag_value": "api",
        "instances": 1,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seed", type=json.loads, help="what to create (JSON, see above)")
    group.add_argument("--sample", action="store_true", help="seed events/ecr-push.json's image")
    arguments = parser.parse_args()
    settings = sample_settings() if arguments.sample else arguments.seed

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=arguments.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    ready = {"endpoint": endpoint, "region": REGION, "account": ACCOUNT}
    if settings is not None:
        ready.update(seed(endpoint, settings))
    print(json.dumps(ready), flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
