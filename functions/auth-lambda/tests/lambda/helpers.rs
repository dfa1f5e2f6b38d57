//! A database per test and the events from `events/`, read as API Gateway would send them.

use std::collections::HashMap;

use auth_lambda::App;
use axum::http::HeaderMap;
use serde_json::Value;

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at a PostgreSQL cluster (make test starts one)")
}

/// `url` without its query (the helpers talk to the cluster without TLS) and with `database`.
fn url_for(url: &str, database: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let scheme_end = base.find("://").expect("a URL") + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{database}", &base[..host_end])
}

async fn admin_execute(sql: &str) {
    let (client, connection) =
        tokio_postgres::connect(&url_for(&admin_url(), "postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
}

/// A fresh database, dropped when the value is.
pub struct TestDatabase {
    name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("latchkey_lambda_{}", uuid::Uuid::new_v4().simple());
        admin_execute(&format!("CREATE DATABASE {name}")).await;
        let url = url_for(&admin_url(), &name) + "?sslmode=disable";
        TestDatabase { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: a thread with its own runtime can block.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(admin_execute(&sql));
            Some(())
        })
        .join();
    }
}

/// A Lambda copy on its own database, configured the way the Lambda configures itself, with
/// cheap hashing (the real cost is measured by the benchmarks, not the tests).
pub async fn app() -> (App, TestDatabase) {
    let db = TestDatabase::create().await;
    let app = app_on(&db.url, &[]).await;
    (app, db)
}

pub async fn app_on(database_url: &str, overrides: &[(&str, &str)]) -> App {
    auth_core::init_tracing(
        Some(auth_core::config::LogFormat::Pretty),
        Some(&std::env::var("TEST_LOG").unwrap_or_else(|_| "error".to_owned())),
    );
    let mut settings = HashMap::from([
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("AUTH_PBKDF2_ITERATIONS".to_owned(), "1000".to_owned()),
        ("LOG_FORMAT".to_owned(), "pretty".to_owned()),
    ]);
    for (key, value) in overrides {
        settings.insert((*key).to_owned(), (*value).to_owned());
    }
    let config = auth_lambda::config_from_lookup(|name| settings.get(name).cloned())
        .expect("valid test configuration");
    App::init(config).await.expect("the Lambda copy starts")
}

/// The sample event `events/NAME`, as JSON to adjust.
pub fn event(name: &str) -> Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
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

    pub fn str(&self, key: &str) -> String {
        self.body[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {}", self.text))
            .to_owned()
    }

    /// The shape every error shares: problem+json with the status and code, and the headers
    /// every response carries.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["status"], status, "{}", self.text);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert_common_headers(self);
    }
}

pub fn assert_common_headers(reply: &Reply) {
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty()),
        "no X-Request-Id: {:?}",
        reply.headers
    );
}

/// The event through `lambda_http::request::from_str`, as the runtime parses it, into the handler.
pub async fn send(app: &App, event: &Value) -> Reply {
    let request = lambda_http::request::from_str(&event.to_string()).expect("a Lambda HTTP event");
    let response = app.handle(request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

/// The sample event with another path, method or header, as a different request would be.
pub fn with_path(mut event: Value, method: &str, path: &str) -> Value {
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["path"] = path.into();
    event["requestContext"]["http"]["method"] = method.into();
    event
}

pub fn with_header(mut event: Value, name: &str, value: &str) -> Value {
    event["headers"][name] = value.into();
    event
}

pub fn with_bearer(event: Value, token: &str) -> Value {
    with_header(event, "authorization", &format!("Bearer {token}"))
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
