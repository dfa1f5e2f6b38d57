//! Faults, for real: PostgreSQL crashed and restarted under load, the service killed with
//! SIGKILL and restarted, slow and abusive clients, and a database that is not there at start-up.

// Test code may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

const PASSWORD: &str = "correct horse battery staple";

/// What a stream of registrations saw: each email with the status it was answered.
#[derive(Default)]
struct Outcomes {
    /// Each email with the last answer it got.
    answered: HashMap<String, u16>,
    refused: usize,
    unexpected: Vec<String>,
}

/// One registration with its Idempotency-Key (the email itself, unique per attempt chain).
async fn register_once(http: &reqwest::Client, base: &str, email: &str) -> Result<u16, String> {
    http.post(format!("{base}/api/v1/auth/register"))
        .header("idempotency-key", email)
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .map(|response| response.status().as_u16())
        // A hang shows up here as the client's timeout.
        .map_err(|error| error.to_string())
}

/// Registers fresh accounts one after another until `stop`, recording every answer; a 503 is
/// retried with the same Idempotency-Key, as a careful client does.
async fn registration_stream(
    http: reqwest::Client,
    base: String,
    worker: usize,
    outcomes: Arc<Mutex<Outcomes>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n = 0;
    let mut retrying = false;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if !retrying {
            n += 1;
        }
        let email = format!("w{worker}-{n}@example.com");
        let result = register_once(&http, &base, &email).await;
        {
            let mut outcomes = outcomes.lock().unwrap();
            match result {
                Ok(status) => {
                    if !(status == 201 || status == 503) {
                        outcomes.unexpected.push(format!("{email}: {status}"));
                    }
                    if status == 503 {
                        outcomes.refused += 1;
                    }
                    retrying = status == 503;
                    outcomes.answered.insert(email, status);
                }
                Err(problem) => outcomes.unexpected.push(format!("{email}: {problem}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_for_status(http: &reqwest::Client, url: &str, wanted: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if status_of(http, url).await == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer {wanted} within {limit:?}");
}

#[tokio::test]
async fn a_database_crash_under_load_gives_503s_then_recovers_by_itself_losing_nothing() {
    let cluster = Cluster::start_new();
    let port = free_port();
    let service = start(
        &cluster.url(),
        port,
        &[
            ("DB_POOL_TIMEOUT_MS", "1000"),
            ("AUTH_IP_REGISTRATIONS_PER_HOUR", "0"),
        ],
    );
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    let signed_in: Value = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_in["access_token"].as_str().unwrap().to_owned();

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|worker| {
            tokio::spawn(registration_stream(
                http.clone(),
                base.clone(),
                worker,
                Arc::clone(&outcomes),
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;

    cluster.crash();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // During the outage: the process serves, is not ready, and database work is 503.
    assert_eq!(status_of(&http, &format!("{base}/healthz")).await, 200);
    assert_eq!(status_of(&http, &format!("{base}/readyz")).await, 503);
    let asked = Instant::now();
    let me = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 503);
    // Answered once the pool gives up, not when the client's own 20 s timeout would end it:
    // DB_POOL_TIMEOUT_MS (1 s here) bounds each of the pool's three steps (waiting for a slot,
    // recycling an idle connection, connecting), so at most 3 s, and 2 s of slack for a busy
    // 2-core machine.
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the outage answer took {waited:?}"
    );
    let problem: Value = me.json().await.unwrap();
    assert_eq!(problem["code"], "unavailable");

    cluster.start();
    wait_for_status(
        &http,
        &format!("{base}/readyz"),
        200,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let me = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "recovered without a restart");

    let mut outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    // A registration still unanswered when the load stopped is retried with its key once more:
    // committed or not, the retry gets 201 for one account.
    let pending: Vec<String> = outcomes
        .answered
        .iter()
        .filter(|(_, status)| **status == 503)
        .map(|(email, _)| email.clone())
        .collect();
    for email in pending {
        let status = register_once(&http, &base, &email).await.unwrap();
        assert_eq!(status, 201, "{email}: a retry with its key");
        outcomes.answered.insert(email, status);
    }
    assert!(
        outcomes.unexpected.is_empty(),
        "neither a hang nor a 500: {:?}",
        outcomes.unexpected
    );
    let created: HashSet<&String> = outcomes
        .answered
        .iter()
        .filter(|(_, s)| **s == 201)
        .map(|(e, _)| e)
        .collect();
    let refused = outcomes.refused;
    assert!(
        created.len() > 5 && refused > 0,
        "the load spanned the outage: {} created, {refused} refused",
        created.len()
    );
    let db = cluster.client().await;
    let stored: HashSet<String> = db
        .query(
            "SELECT email FROM users WHERE email <> 'ann@example.com'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for email in &created {
        assert!(
            stored.contains(*email),
            "{email} was answered 201 but is gone"
        );
    }
    for email in &stored {
        // A crash between COMMIT and its acknowledgement can leave a registration answered 503
        // that did commit; its retry with the same key was answered 201 (never 409).
        assert_eq!(
            outcomes.answered.get(email),
            Some(&201),
            "{email} exists but its client was never told so"
        );
    }
    let half_written: i64 = db
        .query_one(
            "SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM sessions s JOIN refresh_tokens r ON r.session_id = s.id WHERE s.user_id = u.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        half_written, 0,
        "an account without its session and refresh token"
    );
    stop_cleanly(service);
}

#[tokio::test]
async fn the_service_waits_for_a_database_that_is_not_there_yet() {
    let cluster = Cluster::start_new();
    cluster.crash();
    let port = free_port();
    let service = start(&cluster.url(), port, &[]);
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(
        &http,
        &format!("{base}/healthz"),
        200,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status_of(&http, &format!("{base}/readyz")).await, 503);
    let register = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 503);
    assert!(register.headers().get("retry-after").is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(service_is_running(&service), "it did not exit in a loop");

    cluster.start();
    wait_for_status(
        &http,
        &format!("{base}/readyz"),
        200,
        Duration::from_secs(20),
    )
    .await;
    let register = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201);
    let logs = stop_cleanly(service);
    assert!(logs.contains("database unavailable at start-up"), "{logs}");
}

fn service_is_running(service: &Service) -> bool {
    std::path::Path::new(&format!("/proc/{}", service.child.id())).exists()
}

#[tokio::test]
async fn sigkill_during_refreshes_and_registrations_leaves_nothing_half_written() {
    let cluster = Cluster::start_new();
    let port = free_port();
    let settings = [
        ("AUTH_REFRESH_REUSE_GRACE_SECS", "0"),
        ("AUTH_IP_REGISTRATIONS_PER_HOUR", "0"),
        ("AUTH_IP_LOGINS_PER_MINUTE", "0"),
    ];
    let mut service = start(&cluster.url(), port, &settings);
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;

    // Every refresh token the client saw accepted, to prove none is accepted twice.
    let mut accepted: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut registered = 0;
    for round in 0..6 {
        let deadline = Instant::now() + Duration::from_millis(400 + 150 * round);
        let load = async {
            while Instant::now() < deadline {
                registered += 1;
                let _ = http
                    .post(format!("{base}/api/v1/auth/register"))
                    .json(&json!({"email": format!("k{registered}@example.com"), "password": PASSWORD}))
                    .send()
                    .await;
                let token = match &current {
                    Some(token) => token.clone(),
                    None => match http
                        .post(format!("{base}/api/v1/auth/login"))
                        .json(&json!({"email": "k1@example.com", "password": PASSWORD}))
                        .send()
                        .await
                    {
                        Ok(response) if response.status() == 200 => {
                            let grant: Value = response.json().await.unwrap();
                            grant["refresh_token"].as_str().unwrap().to_owned()
                        }
                        _ => continue,
                    },
                };
                match http
                    .post(format!("{base}/api/v1/auth/refresh"))
                    .json(&json!({"refresh_token": token}))
                    .send()
                    .await
                {
                    Ok(response) if response.status() == 200 => {
                        assert!(
                            accepted.insert(token.clone()),
                            "a refresh token was accepted twice"
                        );
                        let grant: Value = response.json().await.unwrap();
                        current = Some(grant["refresh_token"].as_str().unwrap().to_owned());
                    }
                    // Reuse (after a lost answer) ends the session: start a new one.
                    Ok(response) if response.status() == 401 => current = None,
                    // The kill landed mid-request: the answer is lost, the token kept for a retry.
                    _ => {}
                }
            }
        };
        load.await;
        kill_hard(service);
        service = start(&cluster.url(), port, &settings);
        wait_ready(&http, &base).await;
    }
    assert!(accepted.len() > 5, "the refreshes ran: {}", accepted.len());

    let db = cluster.client().await;
    let checks = [
        (
            "accounts without a session and refresh token",
            "SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM sessions s JOIN refresh_tokens r ON r.session_id = s.id WHERE s.user_id = u.id)",
        ),
        (
            "sessions with two live refresh tokens",
            "SELECT count(*) FROM (SELECT session_id FROM refresh_tokens WHERE used_at IS NULL GROUP BY session_id HAVING count(*) > 1) t",
        ),
        (
            "live sessions without a live refresh token",
            "SELECT count(*) FROM sessions s WHERE s.revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.session_id = s.id AND r.used_at IS NULL)",
        ),
        (
            "more signing keys than one",
            "SELECT count(*) - 1 FROM signing_keys",
        ),
    ];
    for (what, sql) in checks {
        let count: i64 = db.query_one(sql, &[]).await.unwrap().get(0);
        assert_eq!(count, 0, "{what}");
    }
    stop_cleanly(service);
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_stop_normal_requests() {
    let db = Database::create().await;
    let port = free_port();
    let service = start(
        &db.url,
        port,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "2000"),
            ("HTTP_BODY_READ_TIMEOUT_MS", "2000"),
        ],
    );
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;

    // Three hundred connections that trickle a header one byte a second.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.write_all(b"G").await.unwrap();
        slow.push(stream);
    }
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        let mut closed = 0;
        for byte in b"ET /healthz HTTP/1.1\r\nHost: x\r\n".iter().take(6) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            closed = 0;
            for stream in &mut slow {
                if stream.write_all(&[*byte]).await.is_err() {
                    closed += 1;
                }
            }
        }
        // After the header deadline every one of them has been closed by the server.
        let mut read_closed = 0;
        for stream in &mut slow {
            let mut buf = [0u8; 512];
            if matches!(
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
                Ok(Ok(_) | Err(_))
            ) {
                read_closed += 1;
            }
        }
        (started.elapsed(), closed, read_closed)
    });
    // Meanwhile ordinary clients are served.
    for i in 0..20 {
        let register = http
            .post(format!("{base}/api/v1/auth/register"))
            .json(&json!({"email": format!("n{i}@example.com"), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert!(
            register.status() == 201 || register.status() == 429,
            "{}",
            register.status()
        );
        assert_eq!(status_of(&http, &format!("{base}/healthz")).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, read_closed) = trickle.await.unwrap();
    assert_eq!(
        read_closed, 300,
        "every slow connection was closed by the server"
    );

    // A body that never arrives: the request fails after the body deadline, the worker is freed.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\"")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the half-sent body was not cut off");
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );

    stop_cleanly(service);
    db.drop_now().await;
}

/// Sends one keep-alive GET on `stream` and reads its whole answer (bodies here are short).
async fn keep_alive_get(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let db = Database::create().await;
    let port = free_port();
    let service = start(&db.url, port, &[("HTTP_MAX_CONNECTIONS", "4")]);
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    // reqwest's pooled connection from wait_ready counts as one; hold three more.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let answer = keep_alive_get(&mut stream, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(stream);
    }
    let other = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    assert!(
        other.get(format!("{base}/healthz")).send().await.is_err(),
        "a fifth connection was served at once"
    );
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status_of(&other, &format!("{base}/healthz")).await,
        200,
        "served once a connection closed"
    );
    drop(held);
    drop(http);
    drop(other);
    stop_cleanly(service);
    db.drop_now().await;
}

#[tokio::test]
async fn a_connection_idle_at_sigterm_still_gets_its_next_request_answered_then_closed() {
    let db = Database::create().await;
    let port = free_port();
    let service = start(&db.url, port, &[]);
    let http = http_client();
    wait_ready(&http, &format!("http://127.0.0.1:{port}")).await;
    drop(http);
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let first = keep_alive_get(&mut idle, "/healthz").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );

    // A client that took this connection from its pool as the signal arrived: its request is
    // served, and told to go elsewhere, instead of meeting a closed socket.
    terminate(&service);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last = keep_alive_get(&mut idle, "/healthz").await;
    assert!(last.starts_with("HTTP/1.1 200"), "{last}");
    assert!(
        last.to_ascii_lowercase().contains("connection: close"),
        "{last}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the server closed the connection after it: {closed:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "new connections are refused while draining"
    );
    let (status, logs) =
        tokio::task::spawn_blocking(move || wait_exit(service, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(status.success(), "{logs}");
    db.drop_now().await;
}

#[tokio::test]
async fn sigterm_under_load_finishes_every_request_without_a_5xx() {
    let db = Database::create().await;
    let port = free_port();
    let service = start(
        &db.url,
        port,
        &[
            ("AUTH_PBKDF2_ITERATIONS", "100000"),
            ("AUTH_IP_LOGINS_PER_MINUTE", "0"),
            ("AUTH_IP_REGISTRATIONS_PER_HOUR", "0"),
        ],
    );
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    let statuses = Arc::new(Mutex::new(Vec::<u16>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|worker| {
            let (http, base, statuses, refused, stop) = (http.clone(), base.clone(), Arc::clone(&statuses), Arc::clone(&refused), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let result = http
                        .post(format!("{base}/api/v1/auth/register"))
                        .json(&json!({"email": format!("s{worker}-{n}@example.com"), "password": PASSWORD}))
                        .send()
                        .await;
                    match result {
                        Ok(response) => statuses.lock().unwrap().push(response.status().as_u16()),
                        // After the listener closes, new connections are refused: not a 5xx.
                        Err(error) if error.is_connect() => {
                            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(error) => panic!("a request in flight was dropped: {error}"),
                    }
                }
            })
        })
        .collect();
    // The signal comes once the load is answered steadily (how soon depends on the machine: each
    // registration scores and hashes a password), with six requests in flight.
    let loaded = tokio::time::timeout(Duration::from_secs(30), async {
        while statuses.lock().unwrap().len() < 12 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(loaded.is_ok(), "the load was answered: {statuses:?}");
    terminate(&service);
    let exited = tokio::task::spawn_blocking(move || wait_exit(service, Duration::from_secs(30)));
    let (status, logs) = exited.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(status.success(), "{logs}");
    let statuses = statuses.lock().unwrap().clone();
    assert!(
        statuses.len() > 12,
        "the load went on until the signal: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the listener closed"
    );
    db.drop_now().await;
}

/// One session's chain of refreshes: every answered rotation, in order, until `stop`.
#[derive(Default)]
struct Chain {
    /// (presented, answered successor) for every 200.
    rotations: Vec<(String, String)>,
    current: String,
    unexpected: Vec<String>,
    refused: usize,
}

async fn refresh_stream(
    http: reqwest::Client,
    base: String,
    first: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Chain {
    let mut chain = Chain {
        current: first,
        ..Chain::default()
    };
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let answer = http
            .post(format!("{base}/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": chain.current}))
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == 200 => {
                let grant: Value = response.json().await.unwrap();
                let next = grant["refresh_token"].as_str().unwrap().to_owned();
                chain.rotations.push((chain.current.clone(), next.clone()));
                chain.current = next;
            }
            // The outage: the same token again, as a client retries (within the reuse grace, a
            // rotation that committed before its answer was lost gives the same successor).
            Ok(response) if response.status() == 503 => {
                chain.refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(response) => chain.unexpected.push(format!(
                "{} {}",
                response.status(),
                response.text().await.unwrap()
            )),
            Err(error) => chain.unexpected.push(format!("no answer: {error}")),
        }
    }
    chain
}

#[tokio::test]
async fn a_database_crash_during_refreshes_leaves_every_session_with_the_token_it_was_given() {
    let cluster = Cluster::start_new();
    let port = free_port();
    let service = start(
        &cluster.url(),
        port,
        &[
            ("DB_POOL_TIMEOUT_MS", "1000"),
            ("AUTH_IP_REGISTRATIONS_PER_HOUR", "0"),
            ("AUTH_IP_LOGINS_PER_MINUTE", "0"),
        ],
    );
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    http.post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let mut firsts = Vec::new();
    for _ in 0..6 {
        let grant: Value = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        firsts.push(grant["refresh_token"].as_str().unwrap().to_owned());
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streams: Vec<_> = firsts
        .into_iter()
        .map(|first| {
            tokio::spawn(refresh_stream(
                http.clone(),
                base.clone(),
                first,
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.crash();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start();
    wait_for_status(
        &http,
        &format!("{base}/readyz"),
        200,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut chains = Vec::new();
    for stream in streams {
        chains.push(stream.await.unwrap());
    }

    let refused: usize = chains.iter().map(|chain| chain.refused).sum();
    assert!(refused > 0, "the refreshes spanned the outage");
    let db = cluster.client().await;
    for chain in &chains {
        assert!(
            chain.unexpected.is_empty(),
            "only 200 and 503: {:?}",
            chain.unexpected
        );
        assert!(chain.rotations.len() > 2, "the stream kept refreshing");
        // No token was accepted for two different successors.
        let mut successor: HashMap<&str, &str> = HashMap::new();
        for (presented, next) in &chain.rotations {
            let earlier = successor.insert(presented, next);
            assert!(
                earlier.is_none_or(|earlier| earlier == next),
                "one token, two successors"
            );
        }
        // The token the client holds last is the one the database holds live, and the session
        // has no other.
        let hash = auth_core::token::refresh_token_hash(&chain.current).to_vec();
        let row = db
            .query_one(
                "SELECT rt.used_at IS NULL, \
                 (SELECT count(*) FROM refresh_tokens o WHERE o.session_id = rt.session_id AND o.used_at IS NULL) \
                 FROM refresh_tokens rt WHERE rt.token_hash = $1",
                &[&hash],
            )
            .await
            .unwrap();
        let (live, live_in_session): (bool, i64) = (row.get(0), row.get(1));
        assert!(live, "the last answered token is the live one");
        assert_eq!(live_in_session, 1, "one usable refresh token per session");
    }
    // And it still works.
    let last = &chains[0].current;
    let again = http
        .post(format!("{base}/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": last}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    stop_cleanly(service);
}
