//! On the wire, against moto: the calls the deploy Lambda makes, with the parameters it makes
//! them with. moto runs no command (every invocation reports Success at once), so these prove
//! the calls, not a deploy; the failure paths are in stubbed.rs.

use aws_sdk_ssm::types::Target;
use deploy::{DeployError, Deployer};
use lambda_runtime::{Context, LambdaEvent};

use crate::harness::*;

#[tokio::test]
async fn a_push_sends_the_deploy_document_to_every_tagged_instance_and_no_other() {
    let Some(moto) = Moto::start(2, 1) else {
        return;
    };
    let calls = Calls::default();
    let (ecr, ssm) = moto.clients(&calls);
    let deployer = Deployer::new(moto.config(), ecr, ssm.clone());

    // Through the Lambda handler, as the runtime calls it.
    let output = deployer
        .handle(LambdaEvent::new(
            push_event(&moto.digest),
            Context::default(),
        ))
        .await
        .expect("the deploy succeeds");

    let image = format!("{}/{REPOSITORY}@{}", registry(), moto.digest);
    assert_eq!(output.image, image);
    let mut ids: Vec<String> = output.instances.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, moto.instances, "exactly the tagged instances");
    assert!(output.instances.iter().all(|i| i.status == "Success"));
    assert!(!ids.iter().any(|id| moto.untagged.contains(id)));
    let json = serde_json::to_value(&output).unwrap();
    let keys = |value: &serde_json::Value| {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&json), ["command_id", "image", "instances"]);
    assert_eq!(keys(&json["instances"][0]), ["id", "status"]);

    // The digest confirmed first, then one command, then the waiter on each instance.
    let names = calls.names();
    assert_eq!(names[0], "DescribeImages", "{names:?}");
    assert_eq!(names[1], "SendCommand", "{names:?}");
    assert_eq!(calls.count("SendCommand"), 1, "{names:?}");
    assert_eq!(calls.count("GetCommandInvocation"), 2, "{names:?}");
    assert!(calls.count("ListCommandInvocations") >= 1, "{names:?}");

    // What SSM received.
    let listed = ssm
        .list_commands()
        .command_id(&output.command_id)
        .send()
        .await
        .unwrap();
    let command = &listed.commands()[0];
    assert_eq!(command.document_name(), Some(moto.document.as_str()));
    assert_eq!(
        command.targets(),
        [Target::builder()
            .key(format!("tag:{TAG_KEY}"))
            .values(TAG_VALUE)
            .build()]
    );
    let parameters = command.parameters().expect("parameters");
    assert_eq!(parameters.len(), 1, "the image is the only parameter");
    assert_eq!(parameters["image"], [image]);
    assert_eq!(command.max_concurrency(), Some("1"));
    assert_eq!(command.max_errors(), Some("0"));
    assert_eq!(command.timeout_seconds(), Some(900));
    assert!(
        command
            .comment()
            .unwrap_or("")
            .contains("latchkey-api:v1.4.2")
    );
}

#[tokio::test]
async fn an_unknown_digest_is_refused_and_no_command_is_sent() {
    let Some(moto) = Moto::start(1, 0) else {
        return;
    };
    let calls = Calls::default();
    let (ecr, ssm) = moto.clients(&calls);
    let deployer = Deployer::new(moto.config(), ecr, ssm.clone());
    let unknown = format!("sha256:{}", "0".repeat(64));
    let error = deployer.deploy(push_event(&unknown), 0).await.unwrap_err();
    assert!(
        matches!(&error, DeployError::ImageNotDeployable(m) if m.contains("ImageNotFoundException")),
        "{error}"
    );
    assert_eq!(calls.names(), ["DescribeImages"]);
    assert!(
        ssm.list_commands()
            .send()
            .await
            .unwrap()
            .commands()
            .is_empty()
    );
}

#[tokio::test]
async fn a_refused_event_makes_no_aws_call_at_all() {
    let Some(moto) = Moto::start(1, 0) else {
        return;
    };
    let calls = Calls::default();
    let (ecr, ssm) = moto.clients(&calls);
    let deployer = Deployer::new(moto.config(), ecr, ssm);
    for event in [
        event_file("ecr-delete.json"),
        event_file("ecr-push-failed.json"),
    ] {
        let error = deployer.deploy(event, 0).await.unwrap_err();
        assert!(matches!(error, DeployError::Refused(_)), "{error}");
        let diagnostic = lambda_runtime::Diagnostic::from(error);
        assert_eq!(diagnostic.error_type, "Deploy.Refused");
        assert!(diagnostic.error_message.contains("not retried"));
    }
    assert!(calls.names().is_empty(), "{:?}", calls.names());
}

#[tokio::test]
async fn no_instance_with_the_tag_fails_with_the_command_id() {
    let Some(moto) = Moto::start(0, 2) else {
        return;
    };
    let calls = Calls::default();
    let (ecr, ssm) = moto.clients(&calls);
    let deployer = Deployer::new(moto.config(), ecr, ssm);
    let error = deployer
        .deploy(push_event(&moto.digest), 0)
        .await
        .unwrap_err();
    match &error {
        DeployError::NoTargets { command_id, tag } => {
            assert!(!command_id.is_empty());
            assert_eq!(tag, "latchkey-role=api");
        }
        other => panic!("expected NoTargets, got {other:?}"),
    }
    assert_eq!(calls.count("GetCommandInvocation"), 0);
}
