//! The crate's one error type. Each variant is a different answer to "what now?", so each has its
//! own `errorType` in the Lambda's failure record (and the dead-letter queue message).

use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use lambda_runtime::Diagnostic;

use crate::outcome::InstanceOutcome;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A setting is missing or invalid: the function refuses to start.
    #[error("{variable}: {message}")]
    Config {
        variable: &'static str,
        message: String,
    },

    /// The event is not one this function deploys. Nothing was sent to any instance, and sending
    /// the same event again would be refused again.
    #[error("refused (nothing deployed, not retried): {0}")]
    Refused(String),

    /// ECR does not have the pushed digest (or the tag has moved on to a newer image since).
    #[error("refused (nothing deployed, not retried): {0}")]
    ImageNotDeployable(String),

    /// The command reached no instance: nothing carries the back-end tag, or none of those runs
    /// the SSM agent.
    #[error(
        "SSM command {command_id} reached no instance: none carries the tag {tag} (or none of them is managed by SSM); nothing deployed"
    )]
    NoTargets { command_id: String, tag: String },

    /// At least one instance reported a failure; the others are listed as they stood.
    #[error(
        "deploying {image} failed (SSM command {command_id}): {}",
        summary(instances)
    )]
    Failed {
        image: String,
        command_id: String,
        instances: Vec<InstanceOutcome>,
    },

    /// The function's time ran out while instances were still working. The command itself goes
    /// on; its outcome is in SSM under the command id.
    #[error(
        "deploying {image} did not finish while this function waited (SSM command {command_id}, still running in SSM): {}",
        summary(instances)
    )]
    TimedOut {
        image: String,
        command_id: String,
        instances: Vec<InstanceOutcome>,
    },

    /// An AWS call failed (after the SDK's own retries).
    #[error("{operation} failed: {message}")]
    Aws {
        operation: &'static str,
        message: String,
    },
}

/// Each instance's status, then the output tail of the first one that did not succeed: the
/// failure record (and the dead-letter queue message) says why without a trip to SSM.
fn summary(instances: &[InstanceOutcome]) -> String {
    if instances.is_empty() {
        return "no instance reported yet".to_owned();
    }
    let statuses = instances
        .iter()
        .map(|i| match &i.details {
            Some(details) if details != &i.status => format!("{} {} ({details})", i.id, i.status),
            _ => format!("{} {}", i.id, i.status),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let tail = instances
        .iter()
        .find(|i| !i.succeeded() && i.output_tail.is_some())
        .and_then(|i| i.output_tail.as_deref().map(|tail| (&i.id, tail)));
    match tail {
        Some((id, tail)) => format!("{statuses}; the output of {id} ends:\n{tail}"),
        None => statuses,
    }
}

impl DeployError {
    /// The `errorType` Lambda records for this failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            DeployError::Config { .. } => "Deploy.Configuration",
            DeployError::Refused(_) => "Deploy.Refused",
            DeployError::ImageNotDeployable(_) => "Deploy.ImageNotDeployable",
            DeployError::NoTargets { .. } => "Deploy.NoTargets",
            DeployError::Failed { .. } => "Deploy.Failed",
            DeployError::TimedOut { .. } => "Deploy.TimedOut",
            DeployError::Aws { .. } => "Deploy.AwsError",
        }
    }

    /// The service's error code and message when it sent them, else the SDK's error chain
    /// (a timeout, a refused connection); never the whole debug dump.
    pub fn aws<E, R>(operation: &'static str, error: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = match error.as_service_error() {
            Some(service) => format!(
                "{}: {}",
                service.code().unwrap_or("UnknownError"),
                service.message().unwrap_or("(no message)")
            ),
            None => DisplayErrorContext(error).to_string(),
        };
        DeployError::Aws { operation, message }
    }
}

impl From<DeployError> for Diagnostic {
    fn from(error: DeployError) -> Self {
        Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.to_string(),
        }
    }
}
