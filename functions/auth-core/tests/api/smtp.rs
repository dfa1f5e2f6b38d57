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
    /// Whether it came over TLS (STARTTLS or implicit).
    pub tls: bool,
}

impl Mail {
    fn from_json(value: &Value) -> Self {
        Mail {
            to: value["to"][0].as_str().unwrap_or_default().to_owned(),
            from: value["from"].as_str().unwrap_or_default().to_owned(),
            subject: value["subject"].as_str().unwrap_or_default().to_owned(),
            text: value["text"].as_str().unwrap_or_default().to_owned(),
            html: value["html"].as_str().unwrap_or_default().to_owned(),
            tls: value["tls"].as_bool().unwrap_or_default(),
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

/// How the server protects its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkTls {
    None,
    /// Offers STARTTLS and refuses mail without it.
    StartTls,
    /// TLS from the first byte (smtps).
    Implicit,
}

/// A CA of the test's own and a server certificate it signed for `localhost` and `127.0.0.1`,
/// made with the openssl command.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("latchkey-smtp-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(status.success(), "openssl {args:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=latchkey test SMTP CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat());
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        TestCa { dir }
    }

    /// The CA's certificate, for `SMTP_CA_FILE`.
    pub fn ca_file(&self) -> String {
        self.dir.join("ca.crt").to_str().unwrap().to_owned()
    }

    fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

pub struct SmtpSink {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The TLS mode and the certificate and key it serves.
    tls: (SinkTls, Option<(PathBuf, PathBuf)>),
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(SinkTls::None, None).await
    }

    /// A server with TLS, its certificate signed by `ca`.
    pub async fn start_tls(mode: SinkTls, ca: &TestCa) -> Self {
        Self::start_with(mode, Some((ca.server_cert(), ca.server_key()))).await
    }

    /// A plain server on `port` (taking over from another server that listened there).
    pub async fn start_on(port: u16) -> Self {
        Self::start_with_port(port, SinkTls::None, None).await
    }

    async fn start_with(mode: SinkTls, identity: Option<(PathBuf, PathBuf)>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_with_port(port, mode, identity).await
    }

    async fn start_with_port(
        port: u16,
        mode: SinkTls,
        identity: Option<(PathBuf, PathBuf)>,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("latchkey-mail-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sink = SmtpSink {
            port,
            dir,
            child: None,
            tls: (mode, identity),
        };
        sink.resume().await;
        sink
    }

    /// `smtp://127.0.0.1:PORT`: loopback, so plain text is allowed.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The URL for this server by the address its certificate carries: `smtps://` for implicit
    /// TLS, else `smtp://` (STARTTLS).
    pub fn tls_url(&self) -> String {
        let scheme = if self.tls.0 == SinkTls::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
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
        let (port, dir, tls) = (self.port, self.dir.clone(), self.tls.clone());
        let child = tokio::task::spawn_blocking(move || {
            let mut command = Command::new(python());
            command
                .arg(repo_root().join("tests/mail/smtp_sink.py"))
                .args(["--port", &port.to_string(), "--dir"])
                .arg(&dir);
            if let (mode, Some((cert, key))) = tls {
                let mode = match mode {
                    SinkTls::None => "none",
                    SinkTls::StartTls => "starttls",
                    SinkTls::Implicit => "implicit",
                };
                command
                    .args(["--tls", mode, "--cert"])
                    .arg(cert)
                    .arg("--key")
                    .arg(key);
            }
            let mut child = command
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
