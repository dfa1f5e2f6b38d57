//! The deploy Lambda's settings, read once at init from the environment (template.yaml sets them)
//! and validated there, so that a bad stack fails at its first cold start with the variable's
//! name instead of half-deploying later.

use std::time::Duration;

use regex_lite::Regex;
pub use startup::LogFormat;

use crate::error::DeployError;

/// The host script's IMAGE_RE and the SSM document's `allowedPattern`, character for character
/// (a test compares all three): the only text that ever reaches the host's shell line.
pub const IMAGE_PATTERN: &str = r"^([a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?)/([a-z0-9]+([._/-][a-z0-9]+)*)@(sha256:[a-f0-9]{64})$";

/// ECR's own rule for repository names.
const REPOSITORY_PATTERN: &str =
    r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$";
/// A registry host, optionally with a port: the first group of IMAGE_PATTERN.
const REGISTRY_PATTERN: &str = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$";
/// An ECR registry host names its account: 123456789012.dkr.ecr.REGION.amazonaws.com[.cn].
const ECR_REGISTRY_PATTERN: &str =
    r"^([0-9]{12})\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$";
/// The characters of a Docker tag, plus EventBridge's `*`.
const TAG_PATTERN_PATTERN: &str = r"^[A-Za-z0-9_.*-]{1,128}$";
/// EC2 tag keys and values (SSM takes the same characters in `tag:` targets).
const TAG_TEXT_PATTERN: &str = r"^[A-Za-z0-9 _.:/=+@-]*$";
/// SSM document names.
const DOCUMENT_PATTERN: &str = r"^[a-zA-Z0-9_.:/-]{3,128}$";
/// The front-end route's settings, in the order their absence is reported.
const FRONTEND_SETTINGS: [&str; 3] = [
    "DEPLOY_FRONTEND_REPOSITORY",
    "DEPLOY_FRONTEND_DOCUMENT",
    "DEPLOY_FRONTEND_TARGET_TAG_VALUE",
];
/// SendCommand's own patterns for MaxConcurrency and MaxErrors.
const MAX_CONCURRENCY_PATTERN: &str = r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$";
const MAX_ERRORS_PATTERN: &str = r"^([1-9][0-9]*|0|[1-9][0-9]%|[0-9]%|100%)$";

/// Where the pushes of one repository go: which SSM document runs, on which instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// "back-end" or "front-end": what the messages and the log call it.
    pub role: &'static str,
    /// The ECR repository whose pushes take this route.
    pub repository: String,
    /// The SSM document that runs this role's host script.
    pub document: String,
    pub target_tag_key: String,
    pub target_tag_value: String,
}

impl Route {
    /// The tag as SSM writes it in a target: `tag:KEY=VALUE`.
    pub fn target_description(&self) -> String {
        format!("{}={}", self.target_tag_key, self.target_tag_value)
    }
}

#[derive(Clone, Debug)]
pub struct DeployConfig {
    /// The api-container image's repository -> the back-end document on the back-end hosts.
    pub backend: Route,
    /// The front-end image's repository -> the front-end document on the front-end host(s);
    /// `None` when the function deploys the back-end only.
    pub frontend: Option<Route>,
    /// The registry host the instances pull from (REGISTRY in REGISTRY/REPOSITORY@DIGEST).
    pub registry: String,
    /// The account in an ECR registry's host name: DescribeImages asks that registry, and events
    /// from another account are refused.
    pub registry_account: Option<String>,
    /// Which tags deploy, as an EventBridge wildcard (the rule in template.yaml uses the same).
    pub tag_pattern: String,
    pub max_concurrency: String,
    pub max_errors: String,
    /// How long an instance has to start the command (SendCommand's TimeoutSeconds).
    pub delivery_timeout: Duration,
    /// How long the function follows the command (it also stops short of its own deadline).
    pub wait_timeout: Duration,
    pub log_format: Option<LogFormat>,
    pub rust_log: Option<String>,
}

impl DeployConfig {
    pub fn from_env() -> Result<Self, DeployError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, DeployError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &'static str, what: &str| {
            get(name).ok_or_else(|| invalid(name, &format!("{what} (it is required)")))
        };
        let matching = |name: &'static str, value: String, pattern: &str, what: &str| {
            if matches(pattern, &value) {
                Ok(value)
            } else {
                Err(invalid(name, what))
            }
        };

        // A setting that must match `pattern` and be `lengths` characters long.
        let bounded = |name: &'static str,
                       value: String,
                       (pattern, what): (&str, &str),
                       lengths: std::ops::RangeInclusive<usize>,
                       length_what: &str|
         -> Result<String, DeployError> {
            let value = matching(name, value, pattern, what)?;
            if lengths.contains(&value.len()) {
                Ok(value)
            } else {
                Err(invalid(name, length_what))
            }
        };
        let repository_setting = |name: &'static str, value: String| {
            bounded(
                name,
                value,
                (
                    REPOSITORY_PATTERN,
                    "an ECR repository name such as latchkey-api",
                ),
                2..=256,
                "an ECR repository name of 2 to 256 characters",
            )
        };
        let repository = repository_setting(
            "DEPLOY_REPOSITORY",
            required("DEPLOY_REPOSITORY", "an ECR repository name")?,
        )?;
        let registry = matching(
            "DEPLOY_REGISTRY",
            required("DEPLOY_REGISTRY", "the registry host")?,
            REGISTRY_PATTERN,
            "a registry host such as 123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        )?;
        let registry_account = Regex::new(ECR_REGISTRY_PATTERN)
            .ok()
            .and_then(|re| re.captures(&registry).and_then(|c| c.get(1)))
            .map(|m| m.as_str().to_owned());
        let tag_pattern = matching(
            "DEPLOY_TAG_PATTERN",
            get("DEPLOY_TAG_PATTERN").unwrap_or_else(|| "*".to_owned()),
            TAG_PATTERN_PATTERN,
            "a tag or a wildcard of tag characters and * such as v* (at most 128)",
        )?;
        let target_tag_key = matching(
            "DEPLOY_TARGET_TAG_KEY",
            required("DEPLOY_TARGET_TAG_KEY", "the back-end instances' tag key")?,
            TAG_TEXT_PATTERN,
            "an EC2 tag key (letters, digits, spaces and _.:/=+@-)",
        )?;
        if target_tag_key.len() > 128 || target_tag_key.starts_with("aws:") {
            return Err(invalid(
                "DEPLOY_TARGET_TAG_KEY",
                "an EC2 tag key of at most 128 characters, not starting with aws:",
            ));
        }
        let tag_value_setting = |name: &'static str, value: String| {
            bounded(
                name,
                value,
                (
                    TAG_TEXT_PATTERN,
                    "an EC2 tag value (letters, digits, spaces and _.:/=+@-)",
                ),
                0..=256,
                "an EC2 tag value of at most 256 characters",
            )
        };
        let document_setting = |name: &'static str, value: String| {
            matching(
                name,
                value,
                DOCUMENT_PATTERN,
                "an SSM document name (3 to 128 of letters, digits and _.:/-)",
            )
        };
        let backend = Route {
            role: "back-end",
            repository,
            document: document_setting(
                "DEPLOY_DOCUMENT",
                required("DEPLOY_DOCUMENT", "the SSM document's name")?,
            )?,
            target_tag_key: target_tag_key.clone(),
            target_tag_value: tag_value_setting(
                "DEPLOY_TARGET_TAG_VALUE",
                required(
                    "DEPLOY_TARGET_TAG_VALUE",
                    "the back-end instances' tag value",
                )?,
            )?,
        };

        // The front-end route: all three settings, or none (the function then deploys the
        // back-end only). It shares the tag key; its repository and tag value must differ from
        // the back-end's, or a push could reach the wrong hosts with the wrong script.
        let frontend = match FRONTEND_SETTINGS.map(|name| (name, get(name))) {
            [(_, None), (_, None), (_, None)] => None,
            [
                (_, Some(repository)),
                (_, Some(document)),
                (_, Some(tag_value)),
            ] => {
                let repository = repository_setting("DEPLOY_FRONTEND_REPOSITORY", repository)?;
                if repository == backend.repository {
                    return Err(invalid(
                        "DEPLOY_FRONTEND_REPOSITORY",
                        "a repository other than DEPLOY_REPOSITORY's",
                    ));
                }
                let target_tag_value =
                    tag_value_setting("DEPLOY_FRONTEND_TARGET_TAG_VALUE", tag_value)?;
                if target_tag_value == backend.target_tag_value {
                    return Err(invalid(
                        "DEPLOY_FRONTEND_TARGET_TAG_VALUE",
                        "a tag value other than DEPLOY_TARGET_TAG_VALUE's (the back-end hosts')",
                    ));
                }
                Some(Route {
                    role: "front-end",
                    repository,
                    document: document_setting("DEPLOY_FRONTEND_DOCUMENT", document)?,
                    target_tag_key,
                    target_tag_value,
                })
            }
            partial => {
                let missing = partial
                    .iter()
                    .find(|(_, value)| value.is_none())
                    .map_or(FRONTEND_SETTINGS[0], |(name, _)| *name);
                return Err(invalid(
                    missing,
                    "a value: the front-end route takes all of DEPLOY_FRONTEND_REPOSITORY, DEPLOY_FRONTEND_DOCUMENT and DEPLOY_FRONTEND_TARGET_TAG_VALUE, or none",
                ));
            }
        };
        let max_concurrency = matching(
            "DEPLOY_MAX_CONCURRENCY",
            get("DEPLOY_MAX_CONCURRENCY").unwrap_or_else(|| "1".to_owned()),
            MAX_CONCURRENCY_PATTERN,
            "a number of instances or a percentage such as 1 or 50%",
        )?;
        let max_errors = matching(
            "DEPLOY_MAX_ERRORS",
            get("DEPLOY_MAX_ERRORS").unwrap_or_else(|| "0".to_owned()),
            MAX_ERRORS_PATTERN,
            "a number of errors or a percentage such as 0 or 10%",
        )?;
        let seconds = |name: &'static str, default: u64, min: u64, max: u64| {
            let expected = format!("a whole number of seconds from {min} to {max}");
            let value = match get(name) {
                None => default,
                Some(text) => text.parse().map_err(|_| invalid(name, &expected))?,
            };
            if (min..=max).contains(&value) {
                Ok(Duration::from_secs(value))
            } else {
                Err(invalid(name, &expected))
            }
        };
        // SendCommand accepts 30 s to 30 days.
        let delivery_timeout = seconds("DEPLOY_DELIVERY_TIMEOUT_SECS", 900, 30, 2_592_000)?;
        // A Lambda runs at most 900 s.
        let wait_timeout = seconds("DEPLOY_WAIT_TIMEOUT_SECS", 885, 1, 900)?;
        let log_format = LogFormat::from_setting(get("LOG_FORMAT").as_deref())
            .map_err(|_| invalid("LOG_FORMAT", "json or pretty"))?;
        let rust_log = startup::check_log_filter(get("RUST_LOG"))
            .map_err(|_| invalid("RUST_LOG", "a tracing filter such as info"))?;
        Ok(DeployConfig {
            backend,
            frontend,
            registry,
            registry_account,
            tag_pattern,
            max_concurrency,
            max_errors,
            delivery_timeout,
            wait_timeout,
            log_format,
            rust_log,
        })
    }

    /// The route a push to `repository` takes, if any.
    pub fn route_for(&self, repository: &str) -> Option<&Route> {
        std::iter::once(&self.backend)
            .chain(self.frontend.as_ref())
            .find(|route| route.repository == repository)
    }

    /// The repositories this function deploys, for messages: `"a"` or `"a" or "b"`.
    pub fn repositories(&self) -> String {
        std::iter::once(&self.backend)
            .chain(self.frontend.as_ref())
            .map(|route| format!("{:?}", route.repository))
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// `REGISTRY/REPOSITORY@DIGEST`, checked against the documents' own pattern before it is
    /// sent, so that SSM never has to be the one to refuse it.
    pub fn image_reference(&self, route: &Route, digest: &str) -> Result<String, DeployError> {
        let image = format!("{}/{}@{digest}", self.registry, route.repository);
        if matches(IMAGE_PATTERN, &image) {
            Ok(image)
        } else {
            Err(DeployError::Refused(format!(
                "{image:?} is not REGISTRY/REPOSITORY@sha256:<64 hex digits>"
            )))
        }
    }
}

/// Whether `text` matches `pattern` (one of this crate's constants, which all compile).
pub fn matches(pattern: &str, text: &str) -> bool {
    Regex::new(pattern).is_ok_and(|re| re.is_match(text))
}

fn invalid(variable: &'static str, expected: &str) -> DeployError {
    DeployError::Config {
        variable,
        message: format!("expected {expected}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub fn settings() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("DEPLOY_REPOSITORY", "latchkey-api"),
            (
                "DEPLOY_REGISTRY",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            ),
            ("DEPLOY_TARGET_TAG_KEY", "latchkey-role"),
            ("DEPLOY_TARGET_TAG_VALUE", "api"),
            ("DEPLOY_DOCUMENT", "latchkey-DeployDocument-AbC123"),
        ])
    }

    fn with(changes: &[(&'static str, &'static str)]) -> Result<DeployConfig, DeployError> {
        let mut map = settings();
        for (key, value) in changes {
            map.insert(key, value);
        }
        DeployConfig::from_lookup(|name| map.get(name).map(|v| (*v).to_owned()))
    }

    fn rejected(changes: &[(&'static str, &'static str)]) -> &'static str {
        match with(changes) {
            Err(DeployError::Config { variable, .. }) => variable,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn every_pattern_compiles() {
        for pattern in [
            IMAGE_PATTERN,
            REPOSITORY_PATTERN,
            REGISTRY_PATTERN,
            ECR_REGISTRY_PATTERN,
            TAG_PATTERN_PATTERN,
            TAG_TEXT_PATTERN,
            DOCUMENT_PATTERN,
            MAX_CONCURRENCY_PATTERN,
            MAX_ERRORS_PATTERN,
        ] {
            assert!(Regex::new(pattern).is_ok(), "{pattern}");
        }
    }

    #[test]
    fn defaults_deploy_one_instance_at_a_time_and_stop_at_the_first_error() {
        let config = with(&[]).unwrap();
        assert_eq!(config.tag_pattern, "*");
        assert_eq!(config.max_concurrency, "1");
        assert_eq!(config.max_errors, "0");
        assert_eq!(config.delivery_timeout, Duration::from_secs(900));
        assert_eq!(config.wait_timeout, Duration::from_secs(885));
        assert_eq!(config.registry_account.as_deref(), Some("123456789012"));
        assert_eq!(config.backend.target_description(), "latchkey-role=api");
        assert_eq!(config.backend.role, "back-end");
        assert_eq!(
            config.frontend, None,
            "no front-end route unless it is configured"
        );
    }

    #[test]
    fn a_registry_that_is_not_ecr_names_no_account() {
        let config = with(&[("DEPLOY_REGISTRY", "registry.example.com:5000")]).unwrap();
        assert_eq!(config.registry_account, None);
    }

    #[test]
    fn every_invalid_setting_names_its_variable() {
        assert_eq!(rejected(&[("DEPLOY_REPOSITORY", "")]), "DEPLOY_REPOSITORY");
        assert_eq!(
            rejected(&[("DEPLOY_REPOSITORY", "Latchkey")]),
            "DEPLOY_REPOSITORY"
        );
        assert_eq!(rejected(&[("DEPLOY_REPOSITORY", "a")]), "DEPLOY_REPOSITORY");
        assert_eq!(
            rejected(&[("DEPLOY_REGISTRY", "https://x.example.com")]),
            "DEPLOY_REGISTRY"
        );
        assert_eq!(
            rejected(&[("DEPLOY_TAG_PATTERN", "v1;rm")]),
            "DEPLOY_TAG_PATTERN"
        );
        assert_eq!(
            rejected(&[("DEPLOY_TARGET_TAG_KEY", "aws:role")]),
            "DEPLOY_TARGET_TAG_KEY"
        );
        assert_eq!(
            rejected(&[("DEPLOY_TARGET_TAG_VALUE", "")]),
            "DEPLOY_TARGET_TAG_VALUE"
        );
        assert_eq!(
            rejected(&[("DEPLOY_TARGET_TAG_VALUE", "a$b")]),
            "DEPLOY_TARGET_TAG_VALUE"
        );
        assert_eq!(rejected(&[("DEPLOY_DOCUMENT", "x")]), "DEPLOY_DOCUMENT");
        assert_eq!(
            rejected(&[("DEPLOY_MAX_CONCURRENCY", "0")]),
            "DEPLOY_MAX_CONCURRENCY"
        );
        assert_eq!(
            rejected(&[("DEPLOY_MAX_ERRORS", "-1")]),
            "DEPLOY_MAX_ERRORS"
        );
        assert_eq!(
            rejected(&[("DEPLOY_DELIVERY_TIMEOUT_SECS", "10")]),
            "DEPLOY_DELIVERY_TIMEOUT_SECS"
        );
        assert_eq!(
            rejected(&[("DEPLOY_WAIT_TIMEOUT_SECS", "901")]),
            "DEPLOY_WAIT_TIMEOUT_SECS"
        );
        assert_eq!(
            rejected(&[("DEPLOY_WAIT_TIMEOUT_SECS", "soon")]),
            "DEPLOY_WAIT_TIMEOUT_SECS"
        );
        assert_eq!(rejected(&[("LOG_FORMAT", "xml")]), "LOG_FORMAT");
        assert_eq!(rejected(&[("RUST_LOG", "info,[[[")]), "RUST_LOG");
    }

    #[test]
    fn the_image_reference_is_pinned_by_digest() {
        let config = with(&[]).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            config.image_reference(&config.backend, &digest).unwrap(),
            format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/latchkey-api@{digest}")
        );
        assert!(
            config
                .image_reference(&config.backend, "sha256:abc")
                .is_err()
        );
        assert!(config.image_reference(&config.backend, "latest").is_err());
    }

    const FRONTEND: [(&str, &str); 3] = [
        ("DEPLOY_FRONTEND_REPOSITORY", "latchkey-frontend"),
        (
            "DEPLOY_FRONTEND_DOCUMENT",
            "latchkey-FrontendDeployDocument-XyZ789",
        ),
        ("DEPLOY_FRONTEND_TARGET_TAG_VALUE", "web"),
    ];

    #[test]
    fn the_front_end_route_has_its_own_repository_document_and_tag_value() {
        let config = with(&FRONTEND).unwrap();
        let frontend = config.frontend.clone().expect("a front-end route");
        assert_eq!(
            frontend,
            Route {
                role: "front-end",
                repository: "latchkey-frontend".to_owned(),
                document: "latchkey-FrontendDeployDocument-XyZ789".to_owned(),
                target_tag_key: "latchkey-role".to_owned(),
                target_tag_value: "web".to_owned(),
            }
        );
        assert_eq!(config.route_for("latchkey-frontend"), Some(&frontend));
        assert_eq!(config.route_for("latchkey-api"), Some(&config.backend));
        assert_eq!(config.route_for("latchkey"), None);
        assert_eq!(
            config.repositories(),
            "\"latchkey-api\" or \"latchkey-frontend\""
        );
        let digest = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            config.image_reference(&frontend, &digest).unwrap(),
            format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/latchkey-frontend@{digest}")
        );
    }

    #[test]
    fn a_front_end_route_missing_a_setting_names_it() {
        for (missing, (name, _)) in FRONTEND.iter().enumerate() {
            let partial: Vec<_> = FRONTEND
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, setting)| *setting)
                .collect();
            assert_eq!(rejected(&partial), *name);
        }
    }

    #[test]
    fn the_front_end_route_cannot_share_the_back_ends_repository_or_hosts() {
        let mut same_repository = FRONTEND;
        same_repository[0].1 = "latchkey-api";
        assert_eq!(rejected(&same_repository), "DEPLOY_FRONTEND_REPOSITORY");
        let mut same_hosts = FRONTEND;
        same_hosts[2].1 = "api";
        assert_eq!(rejected(&same_hosts), "DEPLOY_FRONTEND_TARGET_TAG_VALUE");
        let mut bad_document = FRONTEND;
        bad_document[1].1 = "x";
        assert_eq!(rejected(&bad_document), "DEPLOY_FRONTEND_DOCUMENT");
        let mut bad_repository = FRONTEND;
        bad_repository[0].1 = "Frontend";
        assert_eq!(rejected(&bad_repository), "DEPLOY_FRONTEND_REPOSITORY");
    }

    #[test]
    fn the_image_pattern_admits_nothing_a_shell_would_read() {
        let ok = format!(
            "registry.example.com:5000/team/api@sha256:{}",
            "0".repeat(64)
        );
        assert!(matches(IMAGE_PATTERN, &ok));
        for bad in [
            format!("registry.example.com/api:latest@sha256:{}", "0".repeat(64)),
            format!("registry.example.com/api@sha256:{}'", "0".repeat(64)),
            format!("registry.example.com/api@sha256:{};id", "0".repeat(64)),
            format!("registry.example.com/a$(id)@sha256:{}", "0".repeat(64)),
            format!("registry.example.com/api@sha256:{}\n", "0".repeat(64)),
            format!("registry.example.com/API@sha256:{}", "0".repeat(64)),
            format!("api@sha256:{}", "0".repeat(64)),
        ] {
            assert!(!matches(IMAGE_PATTERN, &bad), "{bad:?}");
        }
    }
}
