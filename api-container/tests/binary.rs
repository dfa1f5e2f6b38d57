//! The api-container binary as an operator runs it: configuration errors, logs, shutdown.

// Test code may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::*;

#[test]
fn an_invalid_setting_stops_start_up_with_a_message_naming_it() {
    for (variable, value) in [
        ("AUTH_PBKDF2_ITERATIONS", "12"),
        ("AUTH_ACCESS_TTL_SECS", "soon"),
        ("AUTH_SIGNING_ALG", "none"),
        ("DB_POOL_TIMEOUT_MS", "-1"),
    ] {
        assert_refused_before_binding(
            "postgres://nobody@127.0.0.1:1/none",
            &[(variable, value)],
            variable,
        );
    }
    let mut missing = Command::new(BINARY);
    let output = missing.env_clear().output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}

#[test]
fn database_settings_that_cannot_work_stop_start_up_before_the_port_is_bound() {
    let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    for (url, extra, variable) in [
        (
            "postgres://nobody@127.0.0.1:1/none?sslmode=sometimes",
            None,
            "DATABASE_URL",
        ),
        (
            "postgres://nobody@127.0.0.1:1/none?sslmode=verify-full",
            Some(("DB_CA_FILE", not_pem)),
            "DB_CA_FILE",
        ),
    ] {
        assert_refused_before_binding(url, extra.as_slice(), variable);
    }
}

#[test]
fn an_smtp_ca_file_that_is_not_pem_stops_start_up_before_the_port_is_bound() {
    let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    assert_refused_before_binding(
        "postgres://nobody@127.0.0.1:1/none",
        &[
            ("SMTP_URL", "smtps://mail.example.com"),
            ("SMTP_CA_FILE", not_pem),
        ],
        "SMTP_CA_FILE",
    );
}

/// The binary exits 2 naming `variable` without trying its port: the port is held by the test
/// throughout, so a binary that bound first would fail on "address in use" instead.
fn assert_refused_before_binding(url: &str, extra: &[(&str, &str)], variable: &str) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let child = start(url, port, extra);
    let (status, output) = wait_exit(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains(variable), "{output}");
    assert!(
        !output.to_lowercase().contains("in use"),
        "it tried the port before refusing the setting: {output}"
    );
    drop(held);
}

/// Every form a secret could take in a log line: as is, base64 (both alphabets, padded or not),
/// hex, and a PEM body's lines.
fn forms_of(secret: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = vec![
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        secret.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    // A PEM body is the standard base64 in 64-character lines; the first would be enough.
    forms.push(STANDARD.encode(secret).chars().take(64).collect());
    if let Ok(text) = std::str::from_utf8(secret) {
        forms.push(text.to_owned());
    }
    forms
}

#[tokio::test]
async fn no_key_secret_or_password_reaches_the_logs_across_changes_rotation_and_reuse() {
    let db = Database::create().await;
    let port = free_port();
    let kek_b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let kek: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap());
    let settings = [
        ("RUST_LOG", "trace"),
        ("AUTH_KEY_ENCRYPTION_KEY", kek_b64),
        ("AUTH_REFRESH_REUSE_GRACE_SECS", "0"),
    ];
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let post = |path: &str, body: Value, bearer: Option<&str>| {
        let mut request = http.post(format!("{base}{path}")).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let password = "Sekrit-Passphrase-4-logs-test";
    let new_password = "Fresh-Passphrase-4-logs-test-2";
    let mut logs = String::new();
    let mut tokens: Vec<String> = Vec::new();

    // First run: register, a password change, a reuse detection, a deletion.
    let child = start(&db.url, port, &settings);
    wait_ready(&http, &base).await;
    let credentials = json!({"email": "ann@example.com", "password": password});
    let ann: Value = post("/api/v1/auth/register", credentials.clone(), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = ann["access_token"].as_str().unwrap().to_owned();
    let other: Value = post("/api/v1/auth/login", credentials, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let changed = post(
        "/api/v1/me/password",
        json!({"current_password": password, "new_password": new_password}),
        Some(&access),
    )
    .await
    .unwrap();
    assert_eq!(changed.status(), 204);
    let first_refresh = ann["refresh_token"].as_str().unwrap().to_owned();
    let rotated: Value = post(
        "/api/v1/auth/refresh",
        json!({"refresh_token": first_refresh}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reused = post(
        "/api/v1/auth/refresh",
        json!({"refresh_token": first_refresh}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(reused.status(), 401, "the reuse is detected");
    let bob: Value = post(
        "/api/v1/auth/register",
        json!({"email": "bob@example.com", "password": new_password}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let deleted = http
        .delete(format!("{base}/api/v1/me"))
        .bearer_auth(bob["access_token"].as_str().unwrap())
        .json(&json!({"password": new_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    logs.push_str(&stop_cleanly(child));
    for grant in [&ann, &other, &rotated, &bob] {
        for field in ["access_token", "refresh_token"] {
            if let Some(token) = grant[field].as_str() {
                tokens.push(token.to_owned());
            }
        }
    }

    // Second run after the key's rotation period: it makes the next key at start-up.
    let client = db.client().await;
    client
        .batch_execute(
            "UPDATE signing_keys SET signs_from = signs_from - interval '40 days', \
             created_at = created_at - interval '40 days'",
        )
        .await
        .unwrap();
    let child = start(&db.url, port, &settings);
    wait_ready(&http, &base).await;
    let after: Value = post(
        "/api/v1/auth/login",
        json!({"email": "ann@example.com", "password": new_password}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    logs.push_str(&stop_cleanly(child));
    tokens.push(after["access_token"].as_str().unwrap().to_owned());
    tokens.push(after["refresh_token"].as_str().unwrap().to_owned());
    assert!(
        logs.contains("created signing keys"),
        "the key rotated: {logs}"
    );

    let mut secrets: Vec<String> = vec![password.into(), new_password.into(), kek_b64.into()];
    secrets.extend(forms_of(&kek));
    for token in &tokens {
        secrets.push(token.clone());
        if let Some(signature) = token.rsplit('.').next().filter(|_| token.contains('.')) {
            secrets.push(signature.to_owned());
        }
    }
    let keys = client
        .query(
            "SELECT kid, private_key FROM signing_keys WHERE private_key IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert!(keys.len() >= 2, "both keys are still whole");
    for key in keys {
        let sealed: Vec<u8> = key.get(1);
        let private = auth_core::seal::open(&kek, key.get(0), &sealed).unwrap();
        secrets.extend(forms_of(&private));
        secrets.extend(forms_of(&sealed));
    }
    for secret in client
        .query("SELECT name, value FROM service_secrets", &[])
        .await
        .unwrap()
    {
        let sealed: Vec<u8> = secret.get(1);
        secrets.extend(forms_of(
            &auth_core::seal::open(&kek, secret.get(0), &sealed).unwrap(),
        ));
        secrets.extend(forms_of(&sealed));
    }
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a secret reached the logs: {secret}"
        );
    }
    db.drop_now().await;
}

#[tokio::test]
async fn no_password_or_token_reaches_the_logs_even_at_trace_level() {
    let db = Database::create().await;
    let port = free_port();
    let child = start(&db.url, port, &[("RUST_LOG", "trace")]);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;

    let password = "Sekrit-Passphrase-4-logs-test";
    let wrong_password = "Wrong-Passphrase-4-logs-test";
    let credentials = json!({"email": "ann@example.com", "password": password});
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let registered: Value = post("/api/v1/auth/register", credentials.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let logged_in: Value = post("/api/v1/auth/login", credentials.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wrong = post(
        "/api/v1/auth/login",
        json!({"email": "ann@example.com", "password": wrong_password}),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), 401);
    let refreshed: Value = post(
        "/api/v1/auth/refresh",
        json!({"refresh_token": logged_in["refresh_token"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let me = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(refreshed["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let logout = http
        .post(format!("{base}/api/v1/auth/logout"))
        .bearer_auth(registered["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);

    let logs = stop_cleanly(child);
    assert!(
        logs.contains("\"route\":\"/api/v1/auth/login\""),
        "the requests were logged: {logs}"
    );
    let mut secrets = vec![password.to_owned(), wrong_password.to_owned()];
    for grant in [&registered, &logged_in, &refreshed] {
        secrets.push(grant["refresh_token"].as_str().unwrap().to_owned());
        let access = grant["access_token"].as_str().unwrap();
        secrets.push(access.to_owned());
        // The signature alone would let nobody forge, but its presence would mean the token leaked.
        secrets.push(access.rsplit('.').next().unwrap().to_owned());
    }
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a secret reached the logs: {secret}"
        );
    }
    db.drop_now().await;
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_cleanly() {
    let db = Database::create().await;
    let port = free_port();
    // Costly hashing so that a login is still running when the signal arrives.
    let child = start(&db.url, port, &[("AUTH_PBKDF2_ITERATIONS", "400000")]);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    let credentials =
        json!({"email": "ann@example.com", "password": "correct horse battery staple"});
    let registered = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    let in_flight = tokio::spawn({
        let http = http.clone();
        let base = base.clone();
        let credentials = credentials.clone();
        async move {
            http.post(format!("{base}/api/v1/auth/login"))
                .json(&credentials)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    terminate(&child);
    let answered = in_flight
        .await
        .unwrap()
        .expect("the in-flight login was answered");
    assert_eq!(answered.status(), 200);
    let (status, logs) =
        tokio::task::spawn_blocking(move || wait_exit(child, Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "the listener is closed"
    );
    db.drop_now().await;
}

#[tokio::test]
async fn the_healthcheck_subcommand_answers_with_its_exit_code() {
    let db = Database::create().await;
    let port = free_port();
    // As Docker runs it: the container's environment, of which the probe needs LISTEN_ADDR only.
    let healthcheck = |path: Option<&str>| {
        let mut command = Command::new(BINARY);
        command
            .arg("healthcheck")
            .env_clear()
            .env("LISTEN_ADDR", format!("0.0.0.0:{port}"));
        if let Some(path) = path {
            command.arg(path);
        }
        command.output().unwrap()
    };
    let nothing = healthcheck(None);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("cannot connect"));

    let child = start(&db.url, port, &[]);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    wait_ready(&http, &format!("http://127.0.0.1:{port}")).await;
    let ready = healthcheck(None);
    assert_eq!(ready.status.code(), Some(0), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stdout).contains("GET /readyz: HTTP/1.1 200"));
    assert_eq!(healthcheck(Some("/healthz")).status.code(), Some(0));
    let missing = healthcheck(Some("/no-such-page"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let usage = Command::new(BINARY).arg("serve-please").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage"));

    stop_cleanly(child);
    db.drop_now().await;
}

#[tokio::test]
async fn ctrl_c_stops_it_cleanly_and_off_a_terminal_it_logs_json_lines() {
    let db = Database::create().await;
    let port = free_port();
    // LOG_FORMAT empty: the format is chosen at start-up, and the log here is a file.
    let child = start(&db.url, port, &[("LOG_FORMAT", "")]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_ready(&http, &format!("http://127.0.0.1:{port}")).await;
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let (status, logs) = wait_exit(child, Duration::from_secs(30));
    assert!(status.success(), "SIGINT is a clean stop: {logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON line: {line}");
    }
    db.drop_now().await;
}

/// Starts the binary on a pseudo-terminal (util-linux's `script`) with LOG_FORMAT unset; returns
/// `script` and the file where the terminal's output goes.
fn run_on_a_terminal(database_url: &str, port: u16) -> (std::process::Child, std::path::PathBuf) {
    let screen =
        std::env::temp_dir().join(format!("api-container-tty-{}.log", uuid::Uuid::new_v4()));
    let child = Command::new("script")
        .args(["--quiet", "--return", "--flush", "--command"])
        .arg(format!("exec {BINARY}"))
        .arg(&screen)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("DATABASE_URL", database_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("AUTH_PBKDF2_ITERATIONS", "1000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (child, screen)
}

#[tokio::test]
async fn on_a_terminal_it_logs_text_for_people_not_json() {
    let db = Database::create().await;
    let port = free_port();
    let (mut terminal, screen) = run_on_a_terminal(&db.url, port);
    wait_ready(&http_client(), &format!("http://127.0.0.1:{port}")).await;
    // Ctrl-C on the terminal: SIGINT to its foreground process group, which `script` made of
    // the service alone (a session of its own, led by the shell that exec'd the binary).
    let service = Command::new("pgrep")
        .args(["-P", &terminal.id().to_string()])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&service.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "no service under the terminal");
    let group = format!("-{pid}");
    assert!(
        Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = terminal.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let shown = String::from_utf8_lossy(&std::fs::read(&screen).unwrap()).into_owned();
    std::fs::remove_file(&screen).unwrap();
    assert!(status.success(), "{shown}");
    let lines: Vec<&str> = shown
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(
        lines.iter().any(|line| line.contains("shutting down")),
        "{shown}"
    );
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line.trim()).is_err(),
            "a JSON line on a terminal: {line}"
        );
    }
    // tracing's pretty format: the level word and the event's fields on lines of their own.
    assert!(shown.contains("INFO"), "{shown}");
    db.drop_now().await;
}

#[tokio::test]
async fn an_unexpected_fault_logs_its_cause_under_the_request_id_and_answers_only_500() {
    let db = Database::create().await;
    let port = free_port();
    let child = start(&db.url, port, &[]);
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    let credentials = json!({"email": "ann@example.com", "password": "Sekrit-Passphrase-4-a-500"});
    let registered = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    // A schema the code does not expect: the failed login's event cannot be recorded.
    db.client()
        .await
        .batch_execute("ALTER TABLE security_events RENAME COLUMN user_agent TO agent")
        .await
        .unwrap();
    let reply = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "ann@example.com", "password": "not the passphrase at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 500);
    let request_id = reply.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = reply.text().await.unwrap();
    assert!(body.contains("\"internal\""), "{body}");
    assert!(
        !body.contains("user_agent") && !body.contains("security_events"),
        "{body}"
    );
    let logs = stop_cleanly(child);
    let failure: Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["request_id"] == request_id.as_str() && line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error line for request {request_id}: {logs}"));
    let cause = failure["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("user_agent") && cause.contains("security_events"),
        "the log names the cause: {failure}"
    );
    assert!(!logs.contains("not the passphrase at all"), "{logs}");
    db.drop_now().await;
}

/// The `kid` in a JWT's header.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn two_running_instances_rotate_their_signing_key_by_themselves() {
    // Nothing calls the rotation: each instance re-reads the key schedule when its ring is a
    // minute old, and plans the next key then. The database's clock is what moves: the key rows'
    // timestamps are set back, as if the days had passed.
    let db = Database::create().await;
    let client = db.client().await;
    let set_keys_back = |by: &'static str| {
        let client = &client;
        async move {
            client
                .batch_execute(&format!(
                    "UPDATE signing_keys SET signs_from = signs_from - ({by}), \
                     created_at = created_at - ({by})"
                ))
                .await
                .unwrap();
        }
    };
    // Longer than KEY_RING_MAX_AGE (60 s): every instance's ring is stale after it.
    let ring_ages = || tokio::time::sleep(Duration::from_secs(62));
    let settings = [("AUTH_KEY_ROTATION_DAYS", "1")];
    let (port_a, port_b) = (free_port(), free_port());
    let a = start(&db.url, port_a, &settings);
    let http = http_client();
    let base_a = format!("http://127.0.0.1:{port_a}");
    wait_ready(&http, &base_a).await;
    let b = start(&db.url, port_b, &settings);
    let base_b = format!("http://127.0.0.1:{port_b}");
    wait_ready(&http, &base_b).await;
    let bases = [base_a.as_str(), base_b.as_str()];
    let jwks = |base: &str| {
        let url = format!("{base}/.well-known/jwks.json");
        let http = &http;
        async move {
            let keys: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            let mut kids: Vec<String> = keys["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|key| key["kid"].as_str().unwrap().to_owned())
                .collect();
            kids.sort();
            kids
        }
    };
    let credentials =
        json!({"email": "ann@example.com", "password": "Sekrit-Passphrase-4-rotation"});
    let login = |base: &str| {
        let (url, http, credentials) = (
            format!("{base}/api/v1/auth/login"),
            &http,
            credentials.clone(),
        );
        async move {
            let reply: Value = http
                .post(url)
                .json(&credentials)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            reply["access_token"].as_str().unwrap().to_owned()
        }
    };
    let me = |base: &str, token: &str| {
        let request = http.get(format!("{base}/api/v1/me")).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let registered = http
        .post(format!("{base_a}/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let first = login(&base_a).await;
    let first_kid = kid_of(&first);
    for base in bases {
        assert_eq!(jwks(base).await, vec![first_kid.clone()]);
        assert_eq!(me(base, &first).await, 200);
    }

    // 13 hours into a one-day period: past half of it, the next key is due to be published.
    set_keys_back("interval '13 hours'").await;
    ring_ages().await;
    let mut published = Vec::new();
    for base in bases {
        published = jwks(base).await;
        assert_eq!(
            published.len(),
            2,
            "{base} publishes the next key: {published:?}"
        );
        assert!(published.contains(&first_kid));
        // Published, but not signing yet: new tokens still carry the current key.
        assert_eq!(kid_of(&login(base).await), first_kid);
    }
    let next_kid = published.into_iter().find(|kid| *kid != first_kid).unwrap();
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM signing_keys", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        2,
        "two instances made one next key"
    );

    // The next key's time comes (a second ago).
    client
        .batch_execute(
            "UPDATE signing_keys SET signs_from = signs_from - shift.by, created_at = created_at - shift.by \
             FROM (SELECT max(signs_from) - now() + interval '1 second' AS by FROM signing_keys) shift",
        )
        .await
        .unwrap();
    ring_ages().await;
    let mut signed = Vec::new();
    for base in bases {
        signed.push(login(base).await);
    }
    for (base, token) in bases.iter().zip(&signed) {
        assert_eq!(kid_of(token), next_kid, "{base} signs with the next key");
        // Both still publish the old key: tokens it signed are still valid.
        assert_eq!(jwks(base).await.len(), 2);
    }
    // Every token verifies on every instance, the old key's included.
    for base in bases {
        for token in signed.iter().chain([&first]) {
            assert_eq!(me(base, token).await, 200, "{base}");
        }
    }

    // Past the access-token lifetime (900 s) after the switch, the old key is retired.
    set_keys_back("interval '20 minutes'").await;
    ring_ages().await;
    for base in bases {
        assert_eq!(
            jwks(base).await,
            vec![next_kid.clone()],
            "{base} retired the old key"
        );
        assert_eq!(
            me(base, &first).await,
            401,
            "{base} refuses the retired key"
        );
        for token in &signed {
            assert_eq!(me(base, token).await, 200);
        }
    }
    let wiped: Option<Vec<u8>> = client
        .query_one(
            "SELECT private_key FROM signing_keys WHERE kid = $1",
            &[&first_kid],
        )
        .await
        .unwrap()
        .get(0);
    assert!(wiped.is_none(), "the retired key's private half is wiped");
    stop_cleanly(a);
    stop_cleanly(b);
    db.drop_now().await;
}

/// The link of `page` in the first log line that carries one, once the service has logged it.
async fn logged_link(log: &std::path::Path, page: &str, nth: usize) -> (String, Value) {
    let marker = format!("/{page}/#token=");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| {
                line["link"]
                    .as_str()
                    .is_some_and(|link| link.contains(&marker))
            })
            .collect();
        if let Some(line) = found.get(nth - 1) {
            let link = line["link"].as_str().unwrap().to_owned();
            return (link, line.clone());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {page} link number {nth} in the log within 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_smtp_url_each_mail_is_logged_with_a_link_that_works_and_no_password() {
    let db = Database::create().await;
    let port = free_port();
    // No SMTP_URL (start() clears the environment): mail goes to the log.
    let child = start(
        &db.url,
        port,
        &[
            ("AUTH_EMAIL_VERIFICATION", "required"),
            ("AUTH_PUBLIC_URL", "https://app.example.com"),
        ],
    );
    let log = child.log.clone();
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();

    let password = "Logged-Mail-Passphrase-4-test";
    let new_password = "Another-Logged-Mail-Passphrase-4-test";
    let registered = post(
        "/api/v1/auth/register",
        json!({"email": "ann@example.com", "password": password}),
    )
    .await
    .unwrap();
    assert_eq!(registered.status(), 202);
    let (link, line) = logged_link(&log, "verify", 1).await;
    assert!(
        link.starts_with("https://app.example.com/verify/#token="),
        "{link}"
    );
    assert_eq!(line["to"], "ann@example.com", "{line}");
    assert!(
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("SMTP_URL is unset")),
        "{line}"
    );
    // The logged link is the real one: it verifies the account.
    let token = link.split("#token=").nth(1).unwrap();
    let verified = post("/api/v1/auth/verify-email", json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(verified.status(), 204);

    // A reset link the same way, and the new password it sets works.
    let requested = post(
        "/api/v1/auth/password-reset",
        json!({"email": "ann@example.com"}),
    )
    .await
    .unwrap();
    assert_eq!(requested.status(), 202);
    let (reset_link, _) = logged_link(&log, "reset", 1).await;
    let confirmed = post(
        "/api/v1/auth/password-reset/confirm",
        json!({"token": reset_link.split("#token=").nth(1).unwrap(), "new_password": new_password}),
    )
    .await
    .unwrap();
    assert_eq!(confirmed.status(), 204);
    let signed_in = post(
        "/api/v1/auth/login",
        json!({"email": "ann@example.com", "password": new_password}),
    )
    .await
    .unwrap();
    assert_eq!(signed_in.status(), 200);

    let logs = stop_cleanly(child);
    assert!(
        logs.contains("SMTP_URL is unset: mail is written to the log"),
        "the start-up warning: {logs}"
    );
    for secret in [password, new_password] {
        assert!(
            !logs.contains(secret),
            "a password reached the logs: {secret}"
        );
    }
    db.drop_now().await;
}
