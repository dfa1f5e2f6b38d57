//! Each test gets its own freshly migrated database on the cluster named by `DATABASE_URL`, and
//! its own server on a random port. Nothing is shared between tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use auth_core::{Application, Auth, Config};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const STRONG_PASSWORD: &str = "correct horse battery staple";

/// The server's admin URL, from the environment that `make test` sets up.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at a PostgreSQL cluster (make test starts one)")
}

/// `url` with its database name replaced.
pub fn url_for_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").expect("a URL") + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..host_end], database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

pub async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    client
}

/// A database that is dropped when the value is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin = admin_url();
        let name = format!("latchkey_test_{}", uuid::Uuid::new_v4().simple());
        admin_client(&no_tls(&admin))
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = url_for_database(&admin, &name);
        TestDatabase { name, url }
    }

    /// A client for reading and changing rows directly.
    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&no_tls(&self.url)).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = no_tls(&admin_url());
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a separate thread with its own runtime can block.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// The test helpers talk to the cluster without TLS; the service itself uses whatever the URL says.
pub fn no_tls(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode="))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Settings every test starts from: cheap hashing (the real cost is measured by benchmarks, not
/// tests) and a random port.
pub fn base_settings(database_url: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            "DATABASE_URL".to_owned(),
            no_tls(database_url) + "?sslmode=disable",
        ),
        ("LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("AUTH_PBKDF2_ITERATIONS".to_owned(), "1000".to_owned()),
        ("LOG_FORMAT".to_owned(), "pretty".to_owned()),
    ])
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub auth: Arc<Auth>,
    pub db: Arc<TestDatabase>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let db = Arc::new(TestDatabase::create().await);
    spawn_app_on(db, overrides).await
}

/// Another instance on an existing database, as a second server behind a load balancer would be.
pub async fn spawn_app_on(db: Arc<TestDatabase>, overrides: &[(&str, &str)]) -> TestApp {
    // Errors (with their causes) show in a failing test's output; TEST_LOG widens the filter.
    auth_core::init_tracing(
        Some(auth_core::config::LogFormat::Pretty),
        Some(&std::env::var("TEST_LOG").unwrap_or_else(|_| "error".to_owned())),
    );
    let mut settings = base_settings(&db.url);
    for (key, value) in overrides {
        settings.insert((*key).to_owned(), (*value).to_owned());
    }
    let config =
        Config::from_lookup(|name| settings.get(name).cloned()).expect("valid test configuration");
    let app = Application::build(config)
        .await
        .expect("application starts");
    let addr = app.local_addr().expect("bound address");
    let auth = app.auth().expect("a built application has its service");
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = shutdown_rx.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("http client"),
        auth,
        db,
        shutdown: Some(shutdown_tx),
    }
}

/// The hashing pool's slot taken by the test itself until [`HeldHashingSlot::release`].
pub struct HeldHashingSlot {
    release: std::sync::mpsc::Sender<()>,
    job: tokio::task::JoinHandle<()>,
}

impl HeldHashingSlot {
    /// Frees the slot and returns once the pool has it back.
    pub async fn release(self) {
        let _ = self.release.send(());
        self.job.await.expect("the holding job ends");
    }
}

impl TestApp {
    /// Occupies one of the hashing pool's slots; returns once the slot is taken.
    pub async fn hold_hashing_slot(&self) -> HeldHashingSlot {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = oneshot::channel::<()>();
        let auth = Arc::clone(&self.auth);
        let job = tokio::spawn(async move {
            auth.hashing
                .run(move || {
                    let _ = started_tx.send(());
                    let _ = released.recv();
                })
                .await
                .expect("the hashing pool takes the holding job");
        });
        started.await.expect("the holding job starts");
        HeldHashingSlot { release, job }
    }
}

/// A response read whole, so tests can look at status, headers and body together.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The value of the refresh cookie this response set.
    pub fn refresh_cookie(&self) -> Option<String> {
        self.set_cookies().iter().find_map(|cookie| {
            cookie
                .strip_prefix("refresh_token=")
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn access_token(&self) -> String {
        self.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// The id of the user a registration or login answered with.
    pub fn user_id(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(self.body["user"]["id"].as_str().expect("user.id")).expect("a UUID")
    }

    pub fn refresh_token(&self) -> String {
        self.body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned()
    }

    /// Asserts the shape every error shares: problem+json with the given status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["status"], status, "{}", self.text);
        assert_eq!(self.body["type"], "about:blank");
        assert!(self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
        if status == 401 {
            assert!(
                self.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "401 without WWW-Authenticate"
            );
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        Reply::from(
            self.http
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(self.http.get(self.url(path)).send().await.expect("request")).await
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        Reply::from(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub async fn register(&self, email: &str, password: &str) -> Reply {
        self.post_json(
            "/api/v1/auth/register",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": refresh_token}),
        )
        .await
    }

    pub async fn me(&self, access_token: &str) -> Reply {
        self.get_with_token("/api/v1/me", access_token).await
    }

    /// Registers a fresh account and returns the 201 reply.
    pub async fn signed_up(&self, email: &str) -> Reply {
        let reply = self.register(email, STRONG_PASSWORD).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply
    }
}

/// A claim of a JWT, read without verifying it (the tests compare, the service verifies).
pub fn claim(token: &str, name: &str) -> String {
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .unwrap()
        .claims;
    claims[name].as_str().unwrap().to_owned()
}

/// Asserts two `Set-Cookie` values say the same thing: the same name and value, the same
/// attributes in any order (RFC 6265 gives their order no meaning).
#[track_caller]
pub fn assert_same_cookie(actual: &str, expected: &str) {
    fn parts(cookie: &str) -> (String, std::collections::BTreeSet<String>) {
        let mut parts = cookie.split(';').map(|part| part.trim().to_owned());
        let pair = parts.next().unwrap_or_default();
        (pair, parts.filter(|part| !part.is_empty()).collect())
    }
    assert_eq!(parts(actual), parts(expected), "{actual} vs {expected}");
}
