//! The paths moto cannot take (it reports every command as a success): an instance that fails,
//! one that never finishes, an invocation that does not exist yet, targets that resolve late, a
//! digest ECR does not have. The SDK clients are real; their responses are stubbed with
//! aws-smithy-mocks, and their clock is a manual one, so the waiter's minutes pass at once.

use std::time::{Duration, SystemTime};

use aws_sdk_ecr::operation::describe_images::{DescribeImagesError, DescribeImagesOutput};
use aws_sdk_ecr::types::ImageDetail;
use aws_sdk_ecr::types::error::ImageNotFoundException;
use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ssm::error::ErrorMetadata;
use aws_sdk_ssm::operation::get_command_invocation::{
    GetCommandInvocationError, GetCommandInvocationOutput,
};
use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types::error::InvocationDoesNotExist;
use aws_sdk_ssm::types::{Command, CommandInvocation, CommandInvocationStatus, CommandStatus};
use aws_smithy_async::test_util::{ManualTimeSource, instant_time_and_sleep};
use aws_smithy_async::time::TimeSource;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use deploy::{DeployError, Deployer};
use lambda_runtime::{Context, LambdaEvent};

use crate::harness::*;

const COMMAND_ID: &str = "9d8b3f4e-0c1a-4e57-8a0b-2f6c1d9e7a31";
const DIGEST: &str = "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234a5b6";
/// 2026-11-28T13:00:00Z, so that the clock reads like one.
const START: Duration = Duration::from_secs(1_795_870_800);

struct Stubs {
    deployer: Deployer,
    clock: ManualTimeSource,
}

fn interceptor(rules: &[&Rule]) -> MockResponseInterceptor {
    rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |i, rule| i.with_rule(rule),
    )
}

/// A deployer whose ECR and SSM answer from `ecr_rules` and `ssm_rules` (any rule that matches,
/// as often as it is asked; a call no rule matches fails the test).
fn stubs(ecr_rules: &[&Rule], ssm_rules: &[&Rule], wait_secs: &str) -> Stubs {
    let (clock, sleep) = instant_time_and_sleep(SystemTime::UNIX_EPOCH + START);
    let credentials = Credentials::new("testing", "testing", None, None, "tests");
    let ecr = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(credentials.clone())
        .http_client(create_mock_http_client())
        .interceptor(interceptor(ecr_rules))
        .time_source(clock.clone())
        .sleep_impl(sleep.clone())
        .build();
    let ssm = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(credentials)
        .http_client(create_mock_http_client())
        .interceptor(interceptor(ssm_rules))
        .time_source(clock.clone())
        .sleep_impl(sleep)
        .build();
    let registry = registry();
    let config = deploy::DeployConfig::from_lookup(|name| {
        match name {
            "DEPLOY_REPOSITORY" => Some(REPOSITORY),
            "DEPLOY_REGISTRY" => Some(registry.as_str()),
            "DEPLOY_TARGET_TAG_KEY" => Some(TAG_KEY),
            "DEPLOY_TARGET_TAG_VALUE" => Some(TAG_VALUE),
            "DEPLOY_DOCUMENT" => Some("latchkey-deploy"),
            "DEPLOY_WAIT_TIMEOUT_SECS" => Some(wait_secs),
            _ => None,
        }
        .map(str::to_owned)
    })
    .unwrap();
    Stubs {
        deployer: Deployer::new(
            config,
            aws_sdk_ecr::Client::from_conf(ecr),
            aws_sdk_ssm::Client::from_conf(ssm),
        ),
        clock,
    }
}

impl Stubs {
    fn elapsed(&self) -> Duration {
        self.clock
            .now()
            .duration_since(SystemTime::UNIX_EPOCH + START)
            .unwrap()
    }
}

fn image_found(tags: &'static [&'static str]) -> Rule {
    mock!(aws_sdk_ecr::Client::describe_images)
        .match_requests(|r| {
            r.repository_name() == Some(REPOSITORY)
                && r.registry_id() == Some(ACCOUNT)
                && r.image_ids()[0].image_digest() == Some(DIGEST)
        })
        .then_output(move || {
            let mut detail = ImageDetail::builder().image_digest(DIGEST);
            for tag in tags {
                detail = detail.image_tags(*tag);
            }
            DescribeImagesOutput::builder()
                .image_details(detail.build())
                .build()
        })
}

fn command_sent() -> Rule {
    mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(|r| {
            r.document_name() == Some("latchkey-deploy")
                && r.parameters().is_some_and(|p| {
                    p["image"] == [format!("{}/{REPOSITORY}@{DIGEST}", registry())]
                })
        })
        .then_output(|| {
            SendCommandOutput::builder()
                .command(Command::builder().command_id(COMMAND_ID).build())
                .build()
        })
}

fn command(status: CommandStatus, targets: i32) -> Rule {
    mock!(aws_sdk_ssm::Client::list_commands).then_output(move || {
        ListCommandsOutput::builder()
            .commands(
                Command::builder()
                    .command_id(COMMAND_ID)
                    .status(status.clone())
                    .target_count(targets)
                    .build(),
            )
            .build()
    })
}

fn listed(instances: &'static [(&'static str, CommandInvocationStatus)]) -> Rule {
    mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
        let mut output = ListCommandInvocationsOutput::builder();
        for (id, status) in instances {
            output = output.command_invocations(
                CommandInvocation::builder()
                    .command_id(COMMAND_ID)
                    .instance_id(*id)
                    .status(status.clone())
                    .build(),
            );
        }
        output.build()
    })
}

fn invocation(
    instance: &'static str,
    status: CommandInvocationStatus,
    stdout: &'static str,
    stderr: &'static str,
) -> GetCommandInvocationOutput {
    GetCommandInvocationOutput::builder()
        .command_id(COMMAND_ID)
        .instance_id(instance)
        .status(status.clone())
        .status_details(status.as_str())
        .response_code(if status == CommandInvocationStatus::Success {
            0
        } else {
            1
        })
        .standard_output_content(stdout)
        .standard_error_content(stderr)
        .build()
}

fn on(
    instance: &'static str,
) -> impl Fn(&aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationInput) -> bool {
    move |r| r.command_id() == Some(COMMAND_ID) && r.instance_id() == Some(instance)
}

fn lambda_event() -> LambdaEvent<serde_json::Value> {
    LambdaEvent::new(push_event(DIGEST), Context::default())
}

#[tokio::test]
async fn two_instances_that_succeed_are_reported_with_the_command_id() {
    let ecr = image_found(&[TAG]);
    let (send, cmd) = (command_sent(), command(CommandStatus::InProgress, 2));
    let list = listed(&[
        ("i-0aaa", CommandInvocationStatus::InProgress),
        ("i-0bbb", CommandInvocationStatus::Pending),
    ]);
    let a = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0aaa"))
        .then_output(|| invocation("i-0aaa", CommandInvocationStatus::Success, "deployed", ""));
    let b = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0bbb"))
        .then_output(|| invocation("i-0bbb", CommandInvocationStatus::Success, "deployed", ""));
    let s = stubs(&[&ecr], &[&send, &cmd, &list, &a, &b], "885");
    let output = s.deployer.handle(lambda_event()).await.unwrap();
    assert_eq!(output.command_id, COMMAND_ID);
    assert_eq!(
        serde_json::to_value(&output).unwrap()["instances"],
        serde_json::json!([{"id": "i-0aaa", "status": "Success"}, {"id": "i-0bbb", "status": "Success"}])
    );
    assert_eq!(send.num_calls(), 1);
}

#[tokio::test]
async fn an_instance_that_fails_fails_the_invocation_with_the_command_id_and_its_output_in_the_log()
{
    let logs = LogCapture::default();
    let _guard = logs.install();
    let ecr = image_found(&[TAG]);
    let (send, cmd) = (command_sent(), command(CommandStatus::InProgress, 2));
    let list = listed(&[
        ("i-0aaa", CommandInvocationStatus::InProgress),
        ("i-0bbb", CommandInvocationStatus::Pending),
    ]);
    let failed = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0aaa"))
        .then_output(|| {
            invocation(
                "i-0aaa",
                CommandInvocationStatus::Failed,
                "2026-11-28T13:00:01Z latchkey-deploy[812]: pulling the image\n2026-11-28T13:02:01Z latchkey-deploy[812]: starting latchkey-api-green",
                "2026-11-28T13:04:01Z latchkey-deploy[812]: error: it was not ready within 120s (GET /readyz on 127.0.0.1:8082: 503)",
            )
        });
    // The second instance is never waited for: SSM stops at the first error (MaxErrors 0).
    let untouched = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0bbb"))
        .then_output(|| invocation("i-0bbb", CommandInvocationStatus::Success, "", ""));
    let s = stubs(&[&ecr], &[&send, &cmd, &list, &failed, &untouched], "885");

    let error = s.deployer.handle(lambda_event()).await.unwrap_err();
    match &error {
        DeployError::Failed {
            command_id,
            instances,
            image,
        } => {
            assert_eq!(command_id, COMMAND_ID);
            assert!(image.ends_with(DIGEST));
            assert_eq!(instances.len(), 2);
            assert_eq!(instances[0].id, "i-0aaa");
            assert_eq!(instances[0].status, "Failed");
            assert_eq!(instances[0].response_code, Some(1));
            assert!(
                instances[0]
                    .output_tail
                    .as_deref()
                    .unwrap()
                    .contains("not ready within 120s")
            );
            assert_eq!(instances[1].id, "i-0bbb");
            assert_eq!(instances[1].status, "Pending");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(untouched.num_calls(), 0);
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "Deploy.Failed");
    assert!(diagnostic.error_message.contains(COMMAND_ID));
    assert!(diagnostic.error_message.contains("i-0aaa Failed"));
    // The host's own words reach the failure record (and the dead-letter queue).
    assert!(
        diagnostic
            .error_message
            .contains("the output of i-0aaa ends:\n--- stdout (end) ---"),
        "{}",
        diagnostic.error_message
    );
    assert!(
        diagnostic.error_message.contains("not ready within 120s"),
        "{}",
        diagnostic.error_message
    );

    let log = logs.text();
    let line = log
        .lines()
        .find(|l| l.contains("deploy failed on this instance"))
        .unwrap_or_else(|| panic!("no failure line in the log:\n{log}"));
    assert!(line.contains(COMMAND_ID), "{line}");
    assert!(line.contains("i-0aaa"), "{line}");
    assert!(line.contains("not ready within 120s"), "{line}");
    assert!(line.contains("starting latchkey-api-green"), "{line}");
}

#[tokio::test]
async fn an_instance_that_never_finishes_times_out_with_the_command_id() {
    let ecr = image_found(&[TAG]);
    let (send, cmd) = (command_sent(), command(CommandStatus::InProgress, 1));
    let list = listed(&[("i-0aaa", CommandInvocationStatus::InProgress)]);
    let forever = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0aaa"))
        .then_output(|| {
            invocation(
                "i-0aaa",
                CommandInvocationStatus::InProgress,
                "latchkey-deploy: waiting for the lock",
                "",
            )
        });
    let s = stubs(&[&ecr], &[&send, &cmd, &list, &forever], "300");

    let error = s.deployer.handle(lambda_event()).await.unwrap_err();
    match &error {
        DeployError::TimedOut {
            command_id,
            instances,
            ..
        } => {
            assert_eq!(command_id, COMMAND_ID);
            assert_eq!(instances[0].id, "i-0aaa");
            assert_eq!(instances[0].status, "StillRunning");
            assert_eq!(
                instances[0].details.as_deref(),
                Some("still InProgress when this function stopped waiting")
            );
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert_eq!(
        lambda_runtime::Diagnostic::from(error).error_type,
        "Deploy.TimedOut"
    );
    // The waiter polled with back-off for the whole budget, not once.
    assert!(forever.num_calls() > 3, "{}", forever.num_calls());
    let elapsed = s.elapsed();
    assert!(elapsed >= Duration::from_secs(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(420), "{elapsed:?}");
}

#[tokio::test]
async fn the_wait_ends_before_the_lambdas_own_deadline() {
    let ecr = image_found(&[TAG]);
    let (send, cmd) = (command_sent(), command(CommandStatus::InProgress, 1));
    let list = listed(&[("i-0aaa", CommandInvocationStatus::InProgress)]);
    let forever = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0aaa"))
        .then_output(|| invocation("i-0aaa", CommandInvocationStatus::InProgress, "", ""));
    let s = stubs(&[&ecr], &[&send, &cmd, &list, &forever], "885");
    // 100 s left in this invocation: the function stops waiting 15 s before that.
    let mut context = Context::default();
    context.deadline = u64::try_from((START + Duration::from_secs(100)).as_millis()).unwrap();
    let error = s
        .deployer
        .handle(LambdaEvent::new(push_event(DIGEST), context))
        .await
        .unwrap_err();
    assert!(matches!(error, DeployError::TimedOut { .. }), "{error}");
    let elapsed = s.elapsed();
    assert!(elapsed >= Duration::from_secs(85), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(100), "{elapsed:?}");
}

#[tokio::test]
async fn a_deadline_already_past_at_the_start_is_ignored_not_obeyed() {
    let ecr = image_found(&[TAG]);
    let (send, cmd) = (command_sent(), command(CommandStatus::InProgress, 1));
    let list = listed(&[("i-0aaa", CommandInvocationStatus::InProgress)]);
    let forever = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0aaa"))
        .then_output(|| invocation("i-0aaa", CommandInvocationStatus::InProgress, "", ""));
    let s = stubs(&[&ecr], &[&send, &cmd, &list, &forever], "120");
    // What `cargo lambda watch` sends: 600 000 ms after the epoch.
    let mut context = Context::default();
    context.deadline = 600_000;
    let error = s
        .deployer
        .handle(LambdaEvent::new(push_event(DIGEST), context))
        .await
        .unwrap_err();
    assert!(matches!(error, DeployError::TimedOut { .. }), "{error}");
    let elapsed = s.elapsed();
    assert!(
        elapsed >= Duration::from_secs(120),
        "waited as configured: {elapsed:?}"
    );
}

#[tokio::test]
async fn invocation_does_not_exist_means_not_yet() {
    let ecr = image_found(&[TAG]);
    let (send, cmd) = (command_sent(), command(CommandStatus::InProgress, 1));
    let list = listed(&[("i-0aaa", CommandInvocationStatus::Pending)]);
    let later = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0aaa"))
        .sequence()
        // As on the wire: the waiter goes by the error's code.
        .error(|| {
            GetCommandInvocationError::InvocationDoesNotExist(
                InvocationDoesNotExist::builder()
                    .meta(
                        ErrorMetadata::builder()
                            .code("InvocationDoesNotExist")
                            .build(),
                    )
                    .build(),
            )
        })
        .times(2)
        .output(|| invocation("i-0aaa", CommandInvocationStatus::InProgress, "", ""))
        .output(|| invocation("i-0aaa", CommandInvocationStatus::Success, "deployed", ""))
        .build();
    let s = stubs(&[&ecr], &[&send, &cmd, &list, &later], "885");
    let output = s.deployer.handle(lambda_event()).await.unwrap();
    assert_eq!(output.instances[0].status, "Success");
    assert_eq!(later.num_calls(), 4);
}

#[tokio::test]
async fn targets_that_resolve_late_are_waited_for() {
    let ecr = image_found(&[TAG]);
    let send = command_sent();
    let cmd = mock!(aws_sdk_ssm::Client::list_commands)
        .sequence()
        .output(|| {
            ListCommandsOutput::builder()
                .commands(
                    Command::builder()
                        .command_id(COMMAND_ID)
                        .status(CommandStatus::Pending)
                        .target_count(0)
                        .build(),
                )
                .build()
        })
        .times(2)
        .output(|| {
            ListCommandsOutput::builder()
                .commands(
                    Command::builder()
                        .command_id(COMMAND_ID)
                        .status(CommandStatus::InProgress)
                        .target_count(1)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build();
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .sequence()
        .output(|| ListCommandInvocationsOutput::builder().build())
        .times(2)
        .output(|| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(
                    CommandInvocation::builder()
                        .instance_id("i-0aaa")
                        .status(CommandInvocationStatus::Pending)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build();
    let done = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(on("i-0aaa"))
        .then_output(|| invocation("i-0aaa", CommandInvocationStatus::Success, "", ""));
    let s = stubs(&[&ecr], &[&send, &cmd, &list, &done], "885");
    let output = s.deployer.handle(lambda_event()).await.unwrap();
    assert_eq!(output.instances.len(), 1);
    assert_eq!(cmd.num_calls(), 3);
}

#[tokio::test]
async fn an_unknown_digest_is_refused_before_anything_is_sent() {
    let missing = mock!(aws_sdk_ecr::Client::describe_images).then_error(|| {
        DescribeImagesError::ImageNotFoundException(
            ImageNotFoundException::builder()
                .message("The image with imageId {imageDigest:'sha256:7f5b...'} does not exist")
                .build(),
        )
    });
    let send = command_sent();
    let s = stubs(&[&missing], &[&send], "885");
    let error = s.deployer.handle(lambda_event()).await.unwrap_err();
    assert!(
        matches!(&error, DeployError::ImageNotDeployable(m) if m.contains("ImageNotFoundException")),
        "{error}"
    );
    assert_eq!(
        lambda_runtime::Diagnostic::from(error).error_type,
        "Deploy.ImageNotDeployable"
    );
    assert_eq!(send.num_calls(), 0);
}

#[tokio::test]
async fn a_tag_that_has_moved_on_to_a_newer_image_is_not_deployed() {
    // EventBridge delivered this push late; v1.4.2 now names another digest.
    let moved = image_found(&["v1.4.1"]);
    let send = command_sent();
    let s = stubs(&[&moved], &[&send], "885");
    let error = s.deployer.handle(lambda_event()).await.unwrap_err();
    assert!(
        matches!(&error, DeployError::ImageNotDeployable(m) if m.contains("no longer points")),
        "{error}"
    );
    assert_eq!(send.num_calls(), 0);
}

#[tokio::test]
async fn a_command_that_reaches_no_instance_fails() {
    let ecr = image_found(&[TAG]);
    let (send, cmd) = (command_sent(), command(CommandStatus::Success, 0));
    let list = listed(&[]);
    let s = stubs(&[&ecr], &[&send, &cmd, &list], "885");
    let error = s.deployer.handle(lambda_event()).await.unwrap_err();
    assert!(matches!(error, DeployError::NoTargets { .. }), "{error}");
}
