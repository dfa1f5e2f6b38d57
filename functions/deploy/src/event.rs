//! The EventBridge "ECR Image Action" event, typed, and the checks that decide whether it deploys.
//!
//! The rule in template.yaml already filters on all of this; the function checks again because
//! it can be invoked by other means (a person with `aws lambda invoke`, a second rule, a test),
//! and a deploy is not something to do on an event that merely looks right.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};

use crate::config::{DeployConfig, Route};
use crate::error::DeployError;

pub const SOURCE: &str = "aws.ecr";
pub const DETAIL_TYPE: &str = "ECR Image Action";

/// The `detail` of an ECR Image Action event (kebab-case keys, as ECR sends them).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct ImageActionDetail {
    /// PUSH or DELETE.
    pub action_type: String,
    /// SUCCESS or FAILURE.
    pub result: String,
    pub repository_name: String,
    #[serde(default)]
    pub image_digest: Option<String>,
    /// Absent for a push by digest only.
    #[serde(default)]
    pub image_tag: Option<String>,
    #[serde(default)]
    pub manifest_media_type: Option<String>,
    #[serde(default)]
    pub artifact_media_type: Option<String>,
}

pub type ImageActionEvent = EventBridgeEvent<ImageActionDetail>;

/// A push this function deploys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    pub event_id: Option<String>,
    /// Where it goes: the route of the repository it was pushed to.
    pub route: Route,
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// Parses the raw payload and refuses anything but a successful push of a matching tag to one of
/// the configured repositories, which decides the push's route. Every refusal says what was expected and what came.
pub fn parse(payload: serde_json::Value, config: &DeployConfig) -> Result<Push, DeployError> {
    let refuse = |message: String| Err(DeployError::Refused(message));
    // In two steps, so that the message for an event of another kind names its kind rather than
    // a field its detail happens to lack.
    let envelope: EventBridgeEvent<serde_json::Value> = serde_json::from_value(payload.clone())
        .map_err(|e| DeployError::Refused(format!("not an EventBridge event: {e}")))?;
    if envelope.source != SOURCE || envelope.detail_type != DETAIL_TYPE {
        return refuse(format!(
            "not an ECR image action: source {:?}, detail-type {:?} (expected {SOURCE:?}, {DETAIL_TYPE:?})",
            envelope.source, envelope.detail_type
        ));
    }
    let event: ImageActionEvent = serde_json::from_value(payload)
        .map_err(|e| DeployError::Refused(format!("malformed ECR Image Action event: {e}")))?;
    let detail = event.detail;
    if detail.action_type != "PUSH" {
        return refuse(format!(
            "action-type {:?}: only pushes deploy",
            detail.action_type
        ));
    }
    if detail.result != "SUCCESS" {
        return refuse(format!(
            "result {:?}: the push did not succeed, so there is nothing to deploy",
            detail.result
        ));
    }
    let Some(route) = config.route_for(&detail.repository_name) else {
        return refuse(format!(
            "repository {:?}: this function deploys {} only",
            detail.repository_name,
            config.repositories()
        ));
    };
    if let (Some(expected), Some(account)) = (&config.registry_account, &event.account)
        && account != expected
    {
        return refuse(format!(
            "account {account}: the registry {} belongs to account {expected}",
            config.registry
        ));
    }
    let Some(tag) = detail.image_tag.filter(|tag| !tag.is_empty()) else {
        return refuse(format!(
            "the push has no tag (pushed by digest): only tags matching {:?} deploy",
            config.tag_pattern
        ));
    };
    if !wildcard_matches(&config.tag_pattern, &tag) {
        return refuse(format!(
            "tag {tag:?} is outside the rule {:?}",
            config.tag_pattern
        ));
    }
    let digest = detail.image_digest.unwrap_or_default();
    if !is_sha256_digest(&digest) {
        return refuse(format!(
            "image-digest {digest:?} is not sha256:<64 lowercase hex digits>"
        ));
    }
    Ok(Push {
        event_id: event.id,
        route: route.clone(),
        repository: detail.repository_name,
        tag,
        digest,
    })
}

pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// EventBridge's `wildcard` matching: `*` stands for any run of characters, even none; every
/// other character stands for itself. (Tags cannot contain `*`, so no escaping is needed.)
pub fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            // Let the last `*` take one more character and try again from there.
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn config(tag_pattern: &str) -> DeployConfig {
        config_with(tag_pattern, false)
    }

    /// With `frontend`, the front-end route too, as template.yaml sets it up.
    fn config_with(tag_pattern: &str, frontend: bool) -> DeployConfig {
        DeployConfig::from_lookup(|name| {
            match name {
                "DEPLOY_FRONTEND_REPOSITORY" if frontend => Some("latchkey-frontend"),
                "DEPLOY_FRONTEND_DOCUMENT" if frontend => Some("latchkey-frontend-deploy"),
                "DEPLOY_FRONTEND_TARGET_TAG_VALUE" if frontend => Some("web"),
                "DEPLOY_REPOSITORY" => Some("latchkey-api"),
                "DEPLOY_REGISTRY" => Some("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
                "DEPLOY_TAG_PATTERN" => Some(tag_pattern),
                "DEPLOY_TARGET_TAG_KEY" => Some("latchkey-role"),
                "DEPLOY_TARGET_TAG_VALUE" => Some("api"),
                "DEPLOY_DOCUMENT" => Some("latchkey-deploy"),
                _ => None,
            }
            .map(str::to_owned)
        })
        .unwrap()
    }

    /// The sample event in events/, as `sam local invoke` and `cargo lambda invoke` send it.
    fn sample() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/ecr-push.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn refusal(event: Value) -> String {
        match parse(event, &config("*")) {
            Err(DeployError::Refused(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn with_detail(key: &str, value: Value) -> Value {
        let mut event = sample();
        event["detail"][key] = value;
        event
    }

    #[test]
    fn the_sample_push_parses_into_typed_structs() {
        let typed: ImageActionEvent = serde_json::from_value(sample()).unwrap();
        assert_eq!(typed.source, "aws.ecr");
        assert_eq!(typed.detail_type, "ECR Image Action");
        assert_eq!(typed.account.as_deref(), Some("123456789012"));
        assert_eq!(typed.detail.action_type, "PUSH");
        assert_eq!(typed.detail.repository_name, "latchkey-api");
        let push = parse(sample(), &config("*")).unwrap();
        assert_eq!(push.repository, "latchkey-api");
        assert_eq!(push.tag, "v1.4.2");
        assert!(is_sha256_digest(&push.digest));
        assert_eq!(push.event_id, typed.id);
    }

    #[test]
    fn the_sample_events_for_refusals_are_refused() {
        for (file, expected) in [
            ("ecr-delete.json", "action-type \"DELETE\""),
            ("ecr-push-failed.json", "result \"FAILURE\""),
        ] {
            let path = format!("{}/../../events/{file}", env!("CARGO_MANIFEST_DIR"));
            let event = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let message = refusal(event);
            assert!(message.contains(expected), "{file}: {message}");
        }
    }

    #[test]
    fn a_delete_is_refused() {
        assert!(refusal(with_detail("action-type", json!("DELETE"))).contains("only pushes"));
    }

    #[test]
    fn a_failed_push_is_refused() {
        assert!(refusal(with_detail("result", json!("FAILURE"))).contains("did not succeed"));
    }

    #[test]
    fn another_repository_is_refused() {
        let message = refusal(with_detail("repository-name", json!("someone-else")));
        assert!(message.contains("\"someone-else\""), "{message}");
        assert!(message.contains("\"latchkey-api\" only"), "{message}");
    }

    #[test]
    fn each_repository_takes_its_own_route() {
        let config = config_with("*", true);
        let backend = parse(sample(), &config).unwrap();
        assert_eq!(backend.route.role, "back-end");
        assert_eq!(backend.route.document, "latchkey-deploy");
        assert_eq!(backend.route.target_description(), "latchkey-role=api");

        let frontend = parse(
            with_detail("repository-name", json!("latchkey-frontend")),
            &config,
        )
        .unwrap();
        assert_eq!(frontend.repository, "latchkey-frontend");
        assert_eq!(frontend.route.role, "front-end");
        assert_eq!(frontend.route.document, "latchkey-frontend-deploy");
        assert_eq!(frontend.route.target_description(), "latchkey-role=web");
        assert_eq!(frontend.digest, backend.digest);
    }

    #[test]
    fn a_front_end_push_is_refused_when_no_front_end_route_is_configured() {
        let message = refusal(with_detail("repository-name", json!("latchkey-frontend")));
        assert!(message.contains("\"latchkey-frontend\""), "{message}");
        assert!(message.contains("\"latchkey-api\" only"), "{message}");
    }

    #[test]
    fn an_unknown_repository_is_refused_with_both_routes_named() {
        for repository in ["latchkey", "latchkey-frontend-2", "LATCHKEY-API", ""] {
            let event = with_detail("repository-name", json!(repository));
            match parse(event, &config_with("*", true)) {
                Err(DeployError::Refused(message)) => assert!(
                    message.contains("\"latchkey-api\" or \"latchkey-frontend\" only"),
                    "{message}"
                ),
                other => panic!("{repository}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_tag_outside_the_rule_is_refused() {
        let mut event = sample();
        event["detail"]["image-tag"] = json!("nightly-7");
        match parse(event, &config("v*")) {
            Err(DeployError::Refused(message)) => {
                assert!(message.contains("\"nightly-7\" is outside the rule \"v*\""))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_push_without_a_tag_is_refused() {
        let mut event = sample();
        event["detail"].as_object_mut().unwrap().remove("image-tag");
        assert!(refusal(event).contains("no tag"));
    }

    #[test]
    fn a_malformed_digest_is_refused() {
        for digest in [
            json!("sha256:abc"),
            json!("sha512:".to_owned() + &"a".repeat(128)),
            json!("sha256:".to_owned() + &"A".repeat(64)),
            json!(format!("sha256:{}; reboot", "a".repeat(64))),
        ] {
            assert!(refusal(with_detail("image-digest", digest)).contains("image-digest"));
        }
        let mut event = sample();
        event["detail"]
            .as_object_mut()
            .unwrap()
            .remove("image-digest");
        assert!(refusal(event).contains("image-digest"));
    }

    #[test]
    fn another_account_is_refused() {
        let mut event = sample();
        event["account"] = json!("999999999999");
        assert!(refusal(event).contains("account 999999999999"));
    }

    #[test]
    fn other_events_are_refused_by_kind() {
        let mut s3 = sample();
        s3["source"] = json!("aws.s3");
        s3["detail-type"] = json!("Object Created");
        let message = refusal(s3);
        assert!(message.contains("not an ECR image action"), "{message}");
        assert!(message.contains("aws.s3"), "{message}");

        let scan = with_detail("scan-status", json!("COMPLETE"));
        let mut scan = scan;
        scan["detail-type"] = json!("ECR Image Scan");
        assert!(refusal(scan).contains("\"ECR Image Scan\""));

        assert!(refusal(json!({"hello": "world"})).contains("not an EventBridge event"));
        assert!(refusal(json!("a string")).contains("not an EventBridge event"));
        assert!(refusal(Value::Null).contains("not an EventBridge event"));
    }

    #[test]
    fn a_detail_missing_its_fields_is_refused() {
        let mut event = sample();
        event["detail"] = json!({"result": "SUCCESS"});
        let message = refusal(event);
        assert!(
            message.contains("malformed ECR Image Action event"),
            "{message}"
        );
        assert!(message.contains("action-type"), "{message}");
    }

    #[test]
    fn wildcards_match_like_eventbridge() {
        assert!(wildcard_matches("*", "anything"));
        assert!(wildcard_matches("*", ""));
        assert!(wildcard_matches("v*", "v1.2.3"));
        assert!(!wildcard_matches("v*", "release-v1"));
        assert!(wildcard_matches("*-prod", "build-7-prod"));
        assert!(!wildcard_matches("*-prod", "build-7-prod-2"));
        assert!(wildcard_matches("sha-*-*", "sha-abc-1"));
        assert!(wildcard_matches("a*b*c", "aXXbYYbZc"));
        assert!(!wildcard_matches("a*b*c", "aXXbYY"));
        assert!(wildcard_matches("latest", "latest"));
        assert!(!wildcard_matches("latest", "latest2"));
        assert!(!wildcard_matches("", "x"));
    }
}
