//! What a deploy reports: the function's output and how the command ended on each instance,
//! with the end of its output for the log.

use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::types::{CommandInvocationStatus, CommandStatus};
use serde::Serialize;

/// How much of an instance's output goes to the log: the end, where the reason is.
const OUTPUT_TAIL_LINES: usize = 25;
const OUTPUT_TAIL_BYTES: usize = 4000;

/// What the function returns: `{"image", "command_id", "instances": [{"id", "status"}]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeployOutput {
    pub image: String,
    pub command_id: String,
    pub instances: Vec<InstanceReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceReport {
    pub id: String,
    pub status: String,
}

/// How the command ended (or stood) on one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceOutcome {
    pub id: String,
    /// SSM's status: Success, Failed, TimedOut, Cancelled, Pending, InProgress, ...
    pub status: String,
    /// SSM's finer status (Undeliverable, ExecutionTimedOut, ...).
    pub details: Option<String>,
    pub response_code: Option<i32>,
    /// The end of the script's standard output and error.
    pub output_tail: Option<String>,
}

impl InstanceOutcome {
    pub(crate) fn succeeded(&self) -> bool {
        self.status == CommandInvocationStatus::Success.as_str()
    }

    pub(crate) fn from_invocation(id: &str, output: &GetCommandInvocationOutput) -> Self {
        InstanceOutcome {
            id: id.to_owned(),
            status: output.status().map_or("Unknown", |s| s.as_str()).to_owned(),
            details: output.status_details().map(str::to_owned),
            response_code: Some(output.response_code()),
            output_tail: output_tail(
                output.standard_output_content(),
                output.standard_error_content(),
            ),
        }
    }
}

/// The last lines of stdout and stderr, bounded, for a log line a person can read.
pub fn output_tail(stdout: Option<&str>, stderr: Option<&str>) -> Option<String> {
    fn tail(text: &str) -> String {
        let lines: Vec<&str> = text.trim_end().lines().collect();
        let kept = lines[lines.len().saturating_sub(OUTPUT_TAIL_LINES)..].join("\n");
        if kept.len() <= OUTPUT_TAIL_BYTES {
            return kept;
        }
        let mut start = kept.len() - OUTPUT_TAIL_BYTES;
        while !kept.is_char_boundary(start) {
            start += 1;
        }
        format!("...{}", &kept[start..])
    }
    let parts: Vec<String> = [("stdout", stdout), ("stderr", stderr)]
        .into_iter()
        .filter_map(|(name, text)| {
            text.filter(|t| !t.trim().is_empty())
                .map(|t| format!("--- {name} (end) ---\n{}", tail(t)))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// Not an SSM status: this function stopped waiting while SSM was still at it.
pub const TIMED_OUT_HERE: &str = "StillRunning";

pub(crate) fn is_terminal(status: &CommandStatus) -> bool {
    !matches!(
        status,
        CommandStatus::Pending | CommandStatus::InProgress | CommandStatus::Cancelling
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_tail_keeps_the_last_lines_of_both_streams() {
        let stdout: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let tail = output_tail(Some(&stdout), Some("error: not ready\n")).unwrap();
        assert!(tail.contains("line 100"));
        assert!(tail.contains(&format!("line {}", 100 - OUTPUT_TAIL_LINES + 1)));
        assert!(!tail.contains(&format!("line {}\n", 100 - OUTPUT_TAIL_LINES)));
        assert!(tail.contains("--- stderr (end) ---\nerror: not ready"));
        assert_eq!(output_tail(Some(""), Some("  \n")), None);
    }

    #[test]
    fn the_output_tail_is_bounded_even_for_one_long_line() {
        let long = "é".repeat(10_000);
        let tail = output_tail(Some(&long), None).unwrap();
        assert!(tail.len() < OUTPUT_TAIL_BYTES + 100);
        assert!(tail.contains("...é"));
    }
}
