//! Brute-force back-off and per-IP limits, held in PostgreSQL so that they hold across instances.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Reply, STRONG_PASSWORD, TestApp, spawn_app_on, spawn_app_with};

pub(crate) fn retry_after(reply: &Reply) -> u64 {
    reply
        .header("retry-after")
        .expect("Retry-After on every 429")
        .parse()
        .unwrap()
}

impl TestApp {
    pub(crate) async fn login_as_client(
        &self,
        email: &str,
        password: &str,
        forwarded_for: Option<&str>,
    ) -> Reply {
        let mut request = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}));
        if let Some(ip) = forwarded_for {
            request = request.header("x-forwarded-for", ip);
        }
        Reply::from(request.send().await.unwrap()).await
    }
}

#[tokio::test]
async fn after_five_failures_an_email_backs_off_on_every_instance_even_for_the_right_password() {
    let first = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    let second = spawn_app_on(first.db.clone(), &[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    first.signed_up("ann@example.com").await;
    for attempt in 0..5 {
        let app = if attempt % 2 == 0 { &first } else { &second };
        app.login("ann@example.com", "not the password")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let blocked = second.login("ann@example.com", STRONG_PASSWORD).await;
    blocked.assert_problem(429, "too_many_requests");
    assert_eq!(retry_after(&blocked), 1, "2^(5-5) seconds");
    first
        .login("ANN@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(429, "too_many_requests");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    first
        .login("ann@example.com", "still not the password")
        .await
        .assert_problem(401, "invalid_credentials");
    let longer = second.login("ann@example.com", STRONG_PASSWORD).await;
    longer.assert_problem(429, "too_many_requests");
    assert_eq!(retry_after(&longer), 2, "2^(6-5) seconds");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        second
            .login("ann@example.com", STRONG_PASSWORD)
            .await
            .status,
        200,
        "the right password after the wait"
    );
    for _ in 0..4 {
        first
            .login("ann@example.com", "wrong again")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    assert_eq!(
        first.login("ann@example.com", STRONG_PASSWORD).await.status,
        200,
        "a success reset the count"
    );
}

#[tokio::test]
async fn an_unknown_email_backs_off_exactly_like_a_known_one() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    app.signed_up("ann@example.com").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..6 {
        known.push(app.login("ann@example.com", "not the password").await);
        unknown.push(app.login("nobody@example.com", "not the password").await);
    }
    for (k, u) in known.iter().zip(&unknown) {
        assert_eq!((k.status, &k.text), (u.status, &u.text));
        assert_eq!(k.header("retry-after"), u.header("retry-after"));
    }
    assert_eq!(known[5].status, 429);
}

#[tokio::test]
async fn concurrent_guesses_are_bounded_by_the_network_limit_then_by_the_back_off() {
    // Failures are charged after the check (so a correct login is never held back by attempts
    // still in flight); what bounds a burst of guesses is the per-network limit.
    let first = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "5")]).await;
    let second = spawn_app_on(first.db.clone(), &[("AUTH_IP_LOGINS_PER_MINUTE", "5")]).await;
    first.signed_up("ann@example.com").await;
    let attempts = (0..12).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.login("ann@example.com", "not the password")
    });
    let replies = futures::future::join_all(attempts).await;
    let checked = replies.iter().filter(|r| r.status == 401).count();
    let blocked = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        (checked, blocked),
        (5, 7),
        "only the network's budget was checked: {replies:?}"
    );
    // The five failures now hold the email back from this network, whatever the budget.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = first
        .login_as_client("ann@example.com", STRONG_PASSWORD, None)
        .await;
    reply.assert_problem(429, "too_many_requests");
}

#[tokio::test]
async fn logins_per_ip_are_limited_across_instances_and_concurrently() {
    let first = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "5")]).await;
    let second = spawn_app_on(first.db.clone(), &[("AUTH_IP_LOGINS_PER_MINUTE", "5")]).await;
    let attempts = (0..12).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        // Different emails: only the per-IP limit can refuse these.
        app.login_as_client(
            Box::leak(format!("user{i}@example.com").into_boxed_str()),
            "whatever password",
            None,
        )
    });
    let replies = futures::future::join_all(attempts).await;
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), 7, "{replies:?}");
    for reply in limited {
        reply.assert_problem(429, "too_many_requests");
        assert!((1..=60).contains(&retry_after(reply)));
    }
}

#[tokio::test]
async fn registrations_per_ip_are_limited() {
    let app = spawn_app_with(&[("AUTH_IP_REGISTRATIONS_PER_HOUR", "2")]).await;
    app.signed_up("a@example.com").await;
    app.signed_up("b@example.com").await;
    let third = app.register("c@example.com", STRONG_PASSWORD).await;
    third.assert_problem(429, "too_many_requests");
    assert!(
        retry_after(&third) > 60,
        "the next slot is most of an hour away"
    );
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    // Without trusted proxies the header is ignored: every request is the peer 127.0.0.1.
    let direct = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "2")]).await;
    for ip in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(
            direct
                .login_as_client("x@example.com", "pw", Some(ip))
                .await
                .status,
            401
        );
    }
    direct
        .login_as_client("x@example.com", "pw", Some("203.0.113.3"))
        .await
        .assert_problem(429, "too_many_requests");

    // Behind a trusted proxy each client address has its own budget, on every instance.
    let proxied = spawn_app_with(&[
        ("AUTH_IP_LOGINS_PER_MINUTE", "2"),
        ("AUTH_TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let other = spawn_app_on(
        proxied.db.clone(),
        &[
            ("AUTH_IP_LOGINS_PER_MINUTE", "2"),
            ("AUTH_TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    for ip in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(
            proxied
                .login_as_client("x@example.com", "pw", Some(ip))
                .await
                .status,
            401
        );
        assert_eq!(
            other
                .login_as_client("y@example.com", "pw", Some(ip))
                .await
                .status,
            401
        );
        other
            .login_as_client("z@example.com", "pw", Some(ip))
            .await
            .assert_problem(429, "too_many_requests");
    }
    // The right-most untrusted entry is the client; a spoofed left-most one changes nothing.
    proxied
        .login_as_client("w@example.com", "pw", Some("198.51.100.77, 203.0.113.1"))
        .await
        .assert_problem(429, "too_many_requests");
    let sessions_ip = proxied
        .login_as_client("v@example.com", "pw", Some("198.51.100.9"))
        .await;
    assert_eq!(sessions_ip.status, 401);
}

#[tokio::test]
async fn the_client_address_behind_a_proxy_is_recorded_with_the_session() {
    let app = spawn_app_with(&[("AUTH_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    app.signed_up("ann@example.com").await;
    let reply = app
        .login_as_client("ann@example.com", STRONG_PASSWORD, Some("198.51.100.9"))
        .await;
    let sessions = app
        .get_with_token("/api/v1/sessions", &reply.access_token())
        .await;
    assert_eq!(sessions.body["sessions"][0]["ip"], "198.51.100.9");
}

#[tokio::test]
async fn spent_counters_and_dead_sessions_are_cleaned_up_off_the_request_path() {
    let app = spawn_app_with(&[]).await;
    let db = app.db.client().await;
    db.execute("INSERT INTO rate_limits (bucket, tat) SELECT 'old:' || g, now() - interval '1 hour' FROM generate_series(1, 500) g", &[])
        .await
        .unwrap();
    db.execute(
        "INSERT INTO password_failures (email_hash, network, failures, last_failure_at) \
         SELECT sha256(g::text::bytea), '*', 3, now() - interval '2 days' FROM generate_series(1, 500) g",
        &[],
    )
    .await
    .unwrap();
    let user = app.signed_up("owner@example.com").await;
    let user_id = user.user_id();
    db.execute(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at) \
         SELECT gen_random_uuid(), $1, now() - interval '40 days', now() - interval '40 days', now() - interval '10 days' \
         FROM generate_series(1, 3000)",
        &[&user_id],
    )
    .await
    .unwrap();
    // Every instance runs this pass each minute in the background; no request waits on it.
    app.auth
        .housekeeping(time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("SELECT count(*) FROM rate_limits WHERE bucket LIKE 'old:%'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM password_failures WHERE last_failure_at < now() - interval '1 day'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM sessions WHERE expires_at < now()").await,
        0,
        "expired sessions are deleted too"
    );
    assert_eq!(
        app.me(&user.access_token()).await.status,
        200,
        "live sessions are kept"
    );
}

/// Each instance prunes in the background, first a few seconds after it starts, then each minute;
/// a pass repeats its 5 000-row batches while a table fills one, so a backlog of several batches
/// is gone after one pass, with no request and no direct call.
#[tokio::test]
async fn a_backlog_of_several_batches_is_drained_by_background_passes_alone() {
    let app = spawn_app_with(&[]).await;
    let user = app.signed_up("owner@example.com").await;
    let user_id = user.user_id();
    let db = app.db.client().await;
    db.batch_execute(
        "INSERT INTO rate_limits (bucket, tat) \
         SELECT 'old:' || g, now() - interval '1 hour' FROM generate_series(1, 12000) g; \
         INSERT INTO idempotent_requests (key_hash, fingerprint, session_id, created_at) \
         SELECT sha256(('r' || g)::bytea), sha256(g::text::bytea), NULL, now() - interval '2 days' \
         FROM generate_series(1, 12000) g;",
    )
    .await
    .unwrap();
    // Three batches' worth of sessions over in each way, and one that is not.
    db.execute(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, revoked_at) \
         SELECT gen_random_uuid(), $1, now() - interval '40 days', \
                CASE WHEN g % 3 = 1 THEN now() - interval '40 days' ELSE now() END, \
                CASE WHEN g % 3 = 0 THEN now() - interval '1 day' ELSE now() + interval '1 day' END, \
                CASE WHEN g % 3 = 2 THEN now() - interval '2 days' END \
         FROM generate_series(1, 36000) g",
        &[&user_id],
    )
    .await
    .unwrap();
    // A second instance on the same database: its first pass is due 5 s after it starts, within
    // the wait below whatever the first instance's pass did (it may also have run after the
    // inserts). Either way only background passes run: no request prunes, nothing calls one.
    let second = crate::helpers::spawn_app_on(app.db.clone(), &[]).await;
    let left = || async {
        db.query_one(
            "SELECT (SELECT count(*) FROM rate_limits WHERE bucket LIKE 'old:%') \
                  + (SELECT count(*) FROM idempotent_requests) \
                  + (SELECT count(*) FROM sessions WHERE user_id = $1) - 1",
            &[&user_id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while left().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} rows of the backlog still there after a minute",
            left().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.me(&user.access_token()).await.status,
        200,
        "the live session is kept"
    );
    drop(second);
}
