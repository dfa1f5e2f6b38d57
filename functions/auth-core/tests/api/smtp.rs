//! A real SMTP server for the tests (aiosmtpd, started by `tests/mail/smtp_sink.py`), storing
//! each message it accepts as a JSON file the tests read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python with aiosmtpd: `scripts/mail-sink-python.sh` finds one or makes a virtualenv.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = Command::new(repo_root().join("scripts/mail-sink-python.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/mail-sink-python.sh");
        assert!(output.status.success(), "no Python with aiosmtpd");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    })
}

/// A mail as the server received it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    fn from_json(value: &Value) -> Self {
        Mail {
            to: value["to"][0].as_str().unwrap_or_default().to_owned(),
            from: value["from"].as_str().unwrap_or_default().to_owned(),
            subject: value["subject"].as_str().unwrap_or_default().to_owned(),
            text: value["text"].as_str().unwrap_or_default().to_owned(),
            html: value["html"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// The link of `page` (`verify` or `reset`) in the plain-text body, whole.
    pub fn link(&self, page: &str) -> Option<String> {
        let marker = format!("/{page}/#token=");
        self.text
            .split_whitespace()
            .find(|word| word.contains(&marker))
            .map(str::to_owned)
    }

    /// The token of the link of `page`.
    pub fn token(&self, page: &str) -> Option<String> {
        let link = self.link(page)?;
        Some(link.split("#token=").nth(1)?.to_owned())
    }
}

pub struct SmtpSink {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("latchkey-mail-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sink = SmtpSink {
            port,
            dir,
            child: None,
        };
        sink.resume().await;
        sink
    }

    /// `smtp://127.0.0.1:PORT`: loopback, so plain text is allowed.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server: connections are refused until [`SmtpSink::resume`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            tokio::task::spawn_blocking(move || {
                child.kill().ok();
                child.wait().ok();
            })
            .await
            .unwrap();
        }
    }

    /// Starts the server (again) on the same port and folder; returns once it listens.
    pub async fn resume(&mut self) {
        let (port, dir) = (self.port, self.dir.clone());
        let child = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(python())
                .arg(repo_root().join("tests/mail/smtp_sink.py"))
                .args(["--port", &port.to_string(), "--dir"])
                .arg(&dir)
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the SMTP server");
            let mut ready = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut ready)
                .unwrap();
            assert_eq!(ready.trim(), "ready", "the SMTP server starts");
            child
        });
        let child = tokio::time::timeout(Duration::from_secs(60), child)
            .await
            .expect("the SMTP server starts within 60 s")
            .unwrap();
        self.child = Some(child);
    }

    /// Every mail received so far, in arrival order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|path| {
                let value: Value =
                    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
                Mail::from_json(&value)
            })
            .collect()
    }

    /// The mails to `to`, once there are at least `count` (waiting up to 30 s).
    pub async fn wait_for(&self, to: &str, count: usize) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mails: Vec<Mail> = self.mails().into_iter().filter(|m| m.to == to).collect();
            if mails.len() >= count {
                return mails;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} mail(s) to {to} within 30 s; got {mails:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The newest mail to `to`, waiting for the `count`th.
    pub async fn nth_mail(&self, to: &str, count: usize) -> Mail {
        self.wait_for(to, count).await[count - 1].clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
