//! moto's server as a child process, AWS clients pointed at it, the deploy settings and events.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use aws_sdk_ssm::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ssm::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
};
use aws_sdk_ssm::error::BoxError;
use deploy::DeployConfig;
use serde_json::{Value, json};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";
pub const REPOSITORY: &str = "latchkey-api";
pub const TAG: &str = "v1.4.2";
pub const TAG_KEY: &str = "latchkey-role";
pub const TAG_VALUE: &str = "api";

pub fn registry() -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com")
}

/// The Python that has moto: LATCHKEY_MOTO_PYTHON, else the tool folder scripts/test-lambda.sh
/// installs into, else python3.
fn python() -> PathBuf {
    if let Ok(path) = std::env::var("LATCHKEY_MOTO_PYTHON") {
        return PathBuf::from(path);
    }
    let tools = std::env::var("LATCHKEY_LAMBDA_TOOLS")
        .map(PathBuf::from)
        .or_else(|_| {
            std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|_| std::env::var("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .map(|cache| cache.join("latchkey").join("lambda-tools"))
        });
    if let Ok(tools) = tools {
        let candidate = tools.join("bin").join("python");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("python3")
}

/// A moto server of this test's own, stopped when this is dropped (or when the test process
/// dies: the server exits when its standard input closes).
pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub digest: String,
    pub document: String,
    pub instances: Vec<String>,
    pub untagged: Vec<String>,
}

impl Moto {
    /// `None` (the test then passes without running) only when LATCHKEY_SKIP_MOTO_TESTS=1.
    pub fn start(tagged_instances: usize, untagged_instances: usize) -> Option<Moto> {
        if std::env::var("LATCHKEY_SKIP_MOTO_TESTS").as_deref() == Ok("1") {
            eprintln!("LATCHKEY_SKIP_MOTO_TESTS=1: skipping a test against moto");
            return None;
        }
        let python = python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_server.py");
        let seed = json!({
            "repository": REPOSITORY, "tag": TAG, "tag_key": TAG_KEY, "tag_value": TAG_VALUE,
            "instances": tagged_instances, "untagged": untagged_instances,
        });
        let mut child = Command::new(&python)
            .arg(script)
            .arg("--seed")
            .arg(seed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} for moto: {e}. Install it with scripts/test-lambda.sh (or pip install \"moto[server]\" boto3 pyyaml), point LATCHKEY_MOTO_PYTHON at a Python that has it, or set LATCHKEY_SKIP_MOTO_TESTS=1",
                    python.display()
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("moto's first line");
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "moto did not start with {} (is moto[server] installed there? set LATCHKEY_MOTO_PYTHON, or LATCHKEY_SKIP_MOTO_TESTS=1); it said: {line:?}",
                python.display()
            )
        });
        let strings = |key: &str| -> Vec<String> {
            ready[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Moto {
            endpoint: ready["endpoint"].as_str().expect("endpoint").to_owned(),
            digest: ready["digest"].as_str().expect("digest").to_owned(),
            document: ready["document"].as_str().expect("document").to_owned(),
            instances: strings("instances"),
            untagged: strings("untagged"),
            child,
        })
    }

    /// Clients pointed at this server; `calls` records the operations they send.
    pub fn clients(&self, calls: &Calls) -> (aws_sdk_ecr::Client, aws_sdk_ssm::Client) {
        let credentials = Credentials::new("testing", "testing", None, None, "tests");
        let ecr = aws_sdk_ecr::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(credentials.clone())
            .endpoint_url(&self.endpoint)
            .http_client(deploy::http_client())
            .interceptor(calls.clone())
            .build();
        let ssm = aws_sdk_ssm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(credentials)
            .endpoint_url(&self.endpoint)
            .http_client(deploy::http_client())
            .interceptor(calls.clone())
            .build();
        (
            aws_sdk_ecr::Client::from_conf(ecr),
            aws_sdk_ssm::Client::from_conf(ssm),
        )
    }

    pub fn config(&self) -> DeployConfig {
        config_with_document(&self.document)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn config_with_document(document: &str) -> DeployConfig {
    let registry = registry();
    DeployConfig::from_lookup(|name| {
        match name {
            "DEPLOY_REPOSITORY" => Some(REPOSITORY),
            "DEPLOY_REGISTRY" => Some(registry.as_str()),
            "DEPLOY_TARGET_TAG_KEY" => Some(TAG_KEY),
            "DEPLOY_TARGET_TAG_VALUE" => Some(TAG_VALUE),
            "DEPLOY_DOCUMENT" => Some(document),
            "DEPLOY_WAIT_TIMEOUT_SECS" => Some("60"),
            _ => None,
        }
        .map(str::to_owned)
    })
    .expect("valid test settings")
}

/// events/ecr-push.json, for this digest.
pub fn push_event(digest: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/ecr-push.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["detail"]["image-digest"] = digest.into();
    event["detail"]["image-tag"] = TAG.into();
    event
}

pub fn event_file(name: &str) -> Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The operations a client sent, by their X-Amz-Target (both services speak JSON-RPC), in order.
#[derive(Clone, Debug, Default)]
pub struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    pub fn names(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, name: &str) -> usize {
        self.names().iter().filter(|n| *n == name).count()
    }
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "RecordCalls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("?");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        self.0.lock().unwrap().push(operation);
        Ok(())
    }
}

/// A tracing subscriber for this thread that writes into a buffer the test can read.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let capture = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || capture.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
