//! What the process tests share: a database per test, the binary started with its output in a
//! file, readiness, signals, and a private PostgreSQL cluster that a test may stop for real.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_api-container");

pub fn admin_url() -> String {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (make test sets it)");
    url.split('?').next().unwrap().to_owned()
}

/// A fresh database for one test, dropped at the end.
pub struct Database {
    pub name: String,
    pub url: String,
}

impl Database {
    pub async fn create() -> Self {
        let admin = admin_url();
        let name = format!("latchkey_bin_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = &admin[..admin.rfind('/').unwrap()];
        Database {
            url: format!("{base}/{name}?sslmode=disable"),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    pub async fn drop_now(self) {
        let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running service whose output goes to a file: a pipe nobody reads would block its logging.
pub struct Service {
    pub child: Child,
    pub log: std::path::PathBuf,
}

pub fn start(database_url: &str, port: u16, extra: &[(&str, &str)]) -> Service {
    let log = std::env::temp_dir().join(format!("api-container-test-{}.log", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&log).unwrap();
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("AUTH_PBKDF2_ITERATIONS", "1000")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    for (key, value) in extra {
        command.env(key, value);
    }
    Service {
        child: command.spawn().unwrap(),
        log,
    }
}

pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not become ready");
}

pub fn terminate(service: &Service) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(service.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the process to exit on its own, within `limit`; returns its status and output.
pub fn wait_exit(mut service: Service, limit: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            let text = String::from_utf8_lossy(&std::fs::read(&service.log).unwrap()).into_owned();
            std::fs::remove_file(&service.log).unwrap();
            return (status, text);
        }
        if Instant::now() > deadline {
            service.child.kill().unwrap();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Ends the process at once, as a crash or the OOM killer would.
pub fn kill_hard(service: Service) {
    let mut service = service;
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    let _ = std::fs::remove_file(&service.log);
}

/// A PostgreSQL cluster of the test's own, which it can stop and start for real.
pub struct Cluster {
    pub dir: std::path::PathBuf,
    pub port: u16,
}

const PG_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg.sh");

impl Cluster {
    pub fn start_new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-fault-pg-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // The postgres user (when we are root) must reach the folder.
        let _ = Command::new("chmod").arg("755").arg(&dir).status();
        let cluster = Cluster {
            dir,
            port: free_port(),
        };
        cluster.start();
        cluster
    }

    fn pg(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(PG_SCRIPT)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "pg.sh {args:?} failed");
    }

    pub fn start(&self) {
        let port = self.port.to_string();
        self.pg(&["start", self.dir.to_str().unwrap(), &port]);
    }

    /// An abrupt stop: the server dies as in a crash, dropping every connection.
    pub fn crash(&self) {
        self.pg(&["kill", self.dir.to_str().unwrap()]);
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(PG_SCRIPT)
            .arg("kill")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM, then a clean exit within 30 s; returns what the process logged.
pub fn stop_cleanly(service: Service) -> String {
    terminate(&service);
    let (status, logs) = wait_exit(service, Duration::from_secs(30));
    assert!(status.success(), "{logs}");
    logs
}
