//! From an accepted push to a deployed image: confirm the digest in ECR, send one SSM command (the
//! push's route: the back-end document to the back-end instances, or the front-end document to
//! the front-end ones), follow it to the end on each of them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_ecr::operation::describe_images::DescribeImagesError;
use aws_sdk_ecr::types::ImageIdentifier;
use aws_sdk_ssm::client::Waiters;
use aws_sdk_ssm::types::{CommandStatus, Target};
use aws_sdk_ssm::waiters::command_executed::WaitUntilCommandExecutedError as WaiterError;
use aws_smithy_async::rt::sleep::{AsyncSleep, SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::{SharedTimeSource, SystemTimeSource};
use lambda_runtime::LambdaEvent;

use crate::config::{DeployConfig, Route};
use crate::error::DeployError;
use crate::event::{self, Push};
use crate::outcome::{DeployOutput, InstanceOutcome, InstanceReport, TIMED_OUT_HERE, is_terminal};

/// The document's one parameter.
pub const IMAGE_PARAMETER: &str = "image";
/// How often the instances a tag resolved to are listed while SSM is still resolving them.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);
/// Room left before the function's own deadline to report what happened.
const DEADLINE_MARGIN: Duration = Duration::from_secs(15);
pub struct Deployer {
    config: DeployConfig,
    ecr: aws_sdk_ecr::Client,
    ssm: aws_sdk_ssm::Client,
    // The SDK's clock and sleep, so that tests with a manual clock never wait for real.
    time: SharedTimeSource,
    sleep: SharedAsyncSleep,
}

impl Deployer {
    pub fn new(config: DeployConfig, ecr: aws_sdk_ecr::Client, ssm: aws_sdk_ssm::Client) -> Self {
        let ssm_config = ssm.config();
        let time = ssm_config
            .time_source()
            .unwrap_or_else(|| SharedTimeSource::new(SystemTimeSource::new()));
        let sleep = ssm_config
            .sleep_impl()
            .unwrap_or_else(|| SharedAsyncSleep::new(TokioSleep::new()));
        Deployer {
            config,
            ecr,
            ssm,
            time,
            sleep,
        }
    }

    pub fn config(&self) -> &DeployConfig {
        &self.config
    }

    /// The Lambda handler: one event in, one deploy (or one clear refusal) out. Outcomes are
    /// logged here, with the command id, so the log alone tells what happened.
    pub async fn handle(
        &self,
        event: LambdaEvent<serde_json::Value>,
    ) -> Result<DeployOutput, DeployError> {
        let (payload, context) = event.into_parts();
        let result = self.deploy(payload, context.deadline).await;
        match &result {
            Ok(output) => tracing::info!(
                image = %output.image,
                command_id = %output.command_id,
                instances = %serde_json::to_string(&output.instances).unwrap_or_default(),
                "deployed"
            ),
            Err(error) => tracing::error!(
                error_type = error.error_type(),
                error = %error,
                "deploy did not happen"
            ),
        }
        result
    }

    /// `deadline_ms`: the invocation's deadline in milliseconds since the epoch, 0 when unknown.
    pub async fn deploy(
        &self,
        payload: serde_json::Value,
        deadline_ms: u64,
    ) -> Result<DeployOutput, DeployError> {
        let push = event::parse(payload, &self.config)?;
        let image = self.config.image_reference(&push.route, &push.digest)?;
        tracing::info!(
            event_id = push.event_id.as_deref().unwrap_or(""),
            role = push.route.role,
            tag = %push.tag,
            %image,
            "deploying a push"
        );
        self.confirm(&push, &image).await?;
        let until = self.wait_until(deadline_ms);
        let command_id = self.send(&image, &push).await?;
        tracing::info!(%command_id, %image, role = push.route.role, targets = %push.route.target_description(), document = %push.route.document, "deploy command sent");
        let outcomes = self.follow(&command_id, &image, &push.route, until).await?;
        Ok(DeployOutput {
            image,
            command_id,
            instances: outcomes
                .into_iter()
                .map(|o| InstanceReport {
                    id: o.id,
                    status: o.status,
                })
                .collect(),
        })
    }

    fn wait_until(&self, deadline_ms: u64) -> SystemTime {
        let configured = self.time.now() + self.config.wait_timeout;
        if deadline_ms == 0 {
            return configured;
        }
        let lambda = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
        if lambda <= self.time.now() {
            // Not a deadline Lambda would send (`cargo lambda watch` sends a fixed 600000, ten
            // minutes after 1970): waiting until it would mean not waiting at all.
            tracing::warn!(
                deadline_ms,
                "the invocation's deadline is already past; waiting as configured"
            );
            return configured;
        }
        configured.min(
            lambda
                .checked_sub(DEADLINE_MARGIN)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )
    }

    fn remaining(&self, until: SystemTime) -> Duration {
        until
            .duration_since(self.time.now())
            .unwrap_or(Duration::ZERO)
    }

    /// The digest must be in the repository, and the pushed tag must still point at it: an
    /// event delivered late (EventBridge retries) must not roll back a newer image.
    async fn confirm(&self, push: &Push, image: &str) -> Result<(), DeployError> {
        let reply = self
            .ecr
            .describe_images()
            .set_registry_id(self.config.registry_account.clone())
            .repository_name(&push.repository)
            .image_ids(
                ImageIdentifier::builder()
                    .image_digest(&push.digest)
                    .build(),
            )
            .send()
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                return Err(match error.as_service_error() {
                    Some(DescribeImagesError::ImageNotFoundException(_)) => {
                        DeployError::ImageNotDeployable(format!(
                            "{image} is not in the repository (ImageNotFoundException)"
                        ))
                    }
                    Some(DescribeImagesError::RepositoryNotFoundException(_)) => {
                        DeployError::ImageNotDeployable(format!(
                            "the repository {} does not exist (RepositoryNotFoundException)",
                            push.repository
                        ))
                    }
                    _ => DeployError::aws("ecr:DescribeImages", &error),
                });
            }
        };
        let Some(found) = reply
            .image_details()
            .iter()
            .find(|d| d.image_digest() == Some(push.digest.as_str()))
        else {
            return Err(DeployError::ImageNotDeployable(format!(
                "{image} is not in the repository (DescribeImages did not list it)"
            )));
        };
        if !found.image_tags().iter().any(|t| t == &push.tag) {
            return Err(DeployError::ImageNotDeployable(format!(
                "tag {:?} no longer points at {} (its tags now: {:?}): a newer push took it, and that push deploys",
                push.tag,
                push.digest,
                found.image_tags()
            )));
        }
        Ok(())
    }

    async fn send(&self, image: &str, push: &Push) -> Result<String, DeployError> {
        // The route decides both: the back-end document on the back-end tag, the front-end
        // document on the front-end tag, never a mix.
        let route = &push.route;
        let target = Target::builder()
            .key(format!("tag:{}", route.target_tag_key))
            .values(&route.target_tag_value)
            .build();
        let short_digest: String = push.digest.chars().skip(7).take(12).collect();
        let reply = self
            .ssm
            .send_command()
            .document_name(&route.document)
            .targets(target)
            // The only parameter, and a checked one: SSM substitutes it into the document's
            // fixed command line after its own allowedPattern check. No shell text is built here.
            .parameters(IMAGE_PARAMETER, vec![image.to_owned()])
            .max_concurrency(&self.config.max_concurrency)
            .max_errors(&self.config.max_errors)
            .timeout_seconds(
                i32::try_from(self.config.delivery_timeout.as_secs()).unwrap_or(i32::MAX),
            )
            .comment(truncate(
                &format!(
                    "latchkey deploy {}:{} ({short_digest})",
                    push.repository, push.tag
                ),
                100,
            ))
            .send()
            .await
            .map_err(|e| DeployError::aws("ssm:SendCommand", &e))?;
        reply
            .command()
            .and_then(|c| c.command_id())
            .map(str::to_owned)
            .ok_or_else(|| DeployError::Aws {
                operation: "ssm:SendCommand",
                message: "the reply carried no command id".to_owned(),
            })
    }

    /// Waits for the command on every instance the tag resolved to, in the order SSM lists them.
    /// The first failure ends the wait: the deploy has failed, SSM stops sending (MaxErrors 0),
    /// and the other instances are reported as they stand.
    async fn follow(
        &self,
        command_id: &str,
        image: &str,
        route: &Route,
        until: SystemTime,
    ) -> Result<Vec<InstanceOutcome>, DeployError> {
        let mut done: BTreeMap<String, InstanceOutcome> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        loop {
            let (status, target_count) = self.command_status(command_id).await?;
            let listed = self.invocations(command_id).await?;
            for (instance, _) in &listed {
                if done.contains_key(instance) {
                    continue;
                }
                let outcome = self.wait_for(command_id, instance, until).await?;
                order.push(instance.clone());
                let finished = outcome.succeeded();
                let timed_out = outcome.status == TIMED_OUT_HERE;
                done.insert(instance.clone(), outcome);
                if !finished {
                    let mut outcomes: Vec<InstanceOutcome> = order
                        .iter()
                        .filter_map(|id| done.get(id).cloned())
                        .collect();
                    // The others, as SSM lists them now.
                    outcomes.extend(listed.iter().filter(|(id, _)| !done.contains_key(id)).map(
                        |(id, status)| InstanceOutcome {
                            id: id.clone(),
                            status: status.clone(),
                            details: None,
                            response_code: None,
                            output_tail: None,
                        },
                    ));
                    self.log_failures(command_id, &outcomes);
                    return Err(if timed_out {
                        DeployError::TimedOut {
                            image: image.to_owned(),
                            command_id: command_id.to_owned(),
                            instances: outcomes,
                        }
                    } else {
                        DeployError::Failed {
                            image: image.to_owned(),
                            command_id: command_id.to_owned(),
                            instances: outcomes,
                        }
                    });
                }
                tracing::info!(%command_id, %instance, "deployed on this instance");
            }
            let outcomes = || {
                order
                    .iter()
                    .filter_map(|id| done.get(id).cloned())
                    .collect()
            };
            let resolved = usize::try_from(target_count).unwrap_or(0);
            if resolved > 0 && done.len() >= resolved {
                return Ok(outcomes());
            }
            if let Some(status) = &status
                && is_terminal(status)
            {
                // Everything SSM will ever list has been listed (this pass listed after the
                // status was read).
                if done.is_empty() {
                    return Err(DeployError::NoTargets {
                        command_id: command_id.to_owned(),
                        tag: route.target_description(),
                    });
                }
                if *status == CommandStatus::Success {
                    return Ok(outcomes());
                }
                return Err(DeployError::Failed {
                    image: image.to_owned(),
                    command_id: command_id.to_owned(),
                    instances: outcomes(),
                });
            }
            let remaining = self.remaining(until);
            if remaining.is_zero() {
                return Err(DeployError::TimedOut {
                    image: image.to_owned(),
                    command_id: command_id.to_owned(),
                    instances: outcomes(),
                });
            }
            self.sleep.sleep(DISCOVERY_INTERVAL.min(remaining)).await;
        }
    }

    /// The command's status and how many instances its targets resolved to (0 while resolving).
    async fn command_status(
        &self,
        command_id: &str,
    ) -> Result<(Option<CommandStatus>, i32), DeployError> {
        let reply = self
            .ssm
            .list_commands()
            .command_id(command_id)
            .send()
            .await
            .map_err(|e| DeployError::aws("ssm:ListCommands", &e))?;
        Ok(reply
            .commands()
            .iter()
            .find(|c| c.command_id() == Some(command_id))
            .map_or((None, 0), |c| (c.status().cloned(), c.target_count())))
    }

    /// Every instance the command went to so far, with its status.
    async fn invocations(&self, command_id: &str) -> Result<Vec<(String, String)>, DeployError> {
        let mut found = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let reply = self
                .ssm
                .list_command_invocations()
                .command_id(command_id)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| DeployError::aws("ssm:ListCommandInvocations", &e))?;
            for invocation in reply.command_invocations() {
                if let Some(id) = invocation.instance_id()
                    && !found
                        .iter()
                        .any(|(known, _): &(String, String)| known == id)
                {
                    let status = invocation.status().map_or("Unknown", |s| s.as_str());
                    found.push((id.to_owned(), status.to_owned()));
                }
            }
            match reply.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(found),
            }
        }
    }

    /// The SDK's `CommandExecuted` waiter on one instance. It polls GetCommandInvocation and
    /// takes `InvocationDoesNotExist` (the invocation is not registered yet) as "not yet".
    async fn wait_for(
        &self,
        command_id: &str,
        instance: &str,
        until: SystemTime,
    ) -> Result<InstanceOutcome, DeployError> {
        let waited = self
            .ssm
            .wait_until_command_executed()
            .command_id(command_id)
            .instance_id(instance)
            .wait(self.remaining(until))
            .await;
        match waited {
            Ok(poll) => match poll.as_result() {
                Ok(output) => Ok(InstanceOutcome::from_invocation(instance, output)),
                Err(error) => Err(DeployError::aws("ssm:GetCommandInvocation", error)),
            },
            Err(WaiterError::FailureState(failure)) => match failure.final_poll().as_result() {
                Ok(output) => Ok(InstanceOutcome::from_invocation(instance, output)),
                Err(error) => Ok(InstanceOutcome {
                    id: instance.to_owned(),
                    status: "Failed".to_owned(),
                    details: Some(error.to_string()),
                    response_code: None,
                    output_tail: None,
                }),
            },
            Err(WaiterError::ExceededMaxWait(_)) => {
                // One last look, for the log: where it stands and what it printed so far.
                let last = self
                    .ssm
                    .get_command_invocation()
                    .command_id(command_id)
                    .instance_id(instance)
                    .send()
                    .await
                    .ok();
                let mut outcome = match &last {
                    Some(output) => InstanceOutcome::from_invocation(instance, output),
                    None => InstanceOutcome {
                        id: instance.to_owned(),
                        status: "Unknown".to_owned(),
                        details: None,
                        response_code: None,
                        output_tail: None,
                    },
                };
                outcome.details = Some(format!(
                    "still {} when this function stopped waiting",
                    outcome.status
                ));
                outcome.status = TIMED_OUT_HERE.to_owned();
                Ok(outcome)
            }
            Err(WaiterError::OperationFailed(failed)) => {
                Err(DeployError::aws("ssm:GetCommandInvocation", failed.error()))
            }
            Err(other) => Err(DeployError::Aws {
                operation: "ssm:GetCommandInvocation",
                message: format!("the waiter could not run: {other:?}"),
            }),
        }
    }

    fn log_failures(&self, command_id: &str, outcomes: &[InstanceOutcome]) {
        for outcome in outcomes.iter().filter(|o| !o.succeeded()) {
            tracing::error!(
                %command_id,
                instance = %outcome.id,
                status = %outcome.status,
                details = outcome.details.as_deref().unwrap_or(""),
                response_code = ?outcome.response_code,
                output_tail = outcome.output_tail.as_deref().unwrap_or("(no output)"),
                "deploy failed on this instance"
            );
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comment_fits_ssm() {
        assert_eq!(truncate(&"x".repeat(300), 100).len(), 100);
    }
}
