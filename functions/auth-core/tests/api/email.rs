//! Email verification and password reset, end to end: the service sends through a real SMTP
//! server (aiosmtpd) and the tests follow the links in what it received.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Reply, STRONG_PASSWORD, TestApp, spawn_app_on, spawn_app_with};
use crate::smtp::SmtpSink;

pub(crate) const NEW_PASSWORD: &str = "velvet giraffe orbits quietly";

pub(crate) async fn app_with_mail(sink: &SmtpSink, verification: &str) -> TestApp {
    spawn_app_with(&[
        ("SMTP_URL", &sink.url()),
        ("AUTH_EMAIL_VERIFICATION", verification),
        ("AUTH_PUBLIC_URL", "https://app.example.com"),
        ("MAIL_FROM", "Latchkey <no-reply@example.com>"),
        ("AUTH_IP_REGISTRATIONS_PER_HOUR", "0"),
    ])
    .await
}

/// A boolean claim of a JWT, read without verifying it.
fn bool_claim(token: &str, name: &str) -> Option<bool> {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .unwrap()
        .claims[name]
        .as_bool()
}

impl TestApp {
    pub(crate) async fn verify(&self, token: &str) -> Reply {
        self.post_json("/api/v1/auth/verify-email", &json!({ "token": token }))
            .await
    }

    pub(crate) async fn request_reset(&self, email: &str) -> Reply {
        self.post_json("/api/v1/auth/password-reset", &json!({ "email": email }))
            .await
    }

    pub(crate) async fn confirm_reset(&self, token: &str, new_password: &str) -> Reply {
        self.post_json(
            "/api/v1/auth/password-reset/confirm",
            &json!({ "token": token, "new_password": new_password }),
        )
        .await
    }

    pub(crate) async fn event_types(&self, access_token: &str) -> Vec<String> {
        self.get_with_token("/api/v1/me/events", access_token)
            .await
            .body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["type"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The outbox rows matching `condition`.
    pub(crate) async fn outbox_rows(&self, condition: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(
                &format!("SELECT count(*) FROM outbox WHERE {condition}"),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// The parts of two answers a client could tell apart by: status, body, cookies, cache header.
pub(crate) fn assert_alike(first: &Reply, second: &Reply) {
    assert_eq!(
        first.status, second.status,
        "{} / {}",
        first.text, second.text
    );
    assert_eq!(first.text, second.text);
    assert_eq!(first.set_cookies(), second.set_cookies());
    assert_eq!(
        first.header("cache-control"),
        second.header("cache-control")
    );
    assert_eq!(first.header("content-type"), second.header("content-type"));
}

#[tokio::test]
async fn registering_mails_a_link_that_verifies_the_email_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "optional").await;
    let registered = app.signed_up("ann@example.com").await;
    assert_eq!(registered.body["user"]["email_verified"], false);
    assert_eq!(
        bool_claim(&registered.access_token(), "email_verified"),
        Some(false)
    );

    let mail = sink.nth_mail("ann@example.com", 1).await;
    assert_eq!(mail.from, "Latchkey <no-reply@example.com>");
    assert!(mail.subject.contains("Verify"), "{mail:?}");
    let link = mail.link("verify").expect("a verification link");
    assert!(
        link.starts_with("https://app.example.com/verify/#token="),
        "{link}"
    );
    assert!(
        mail.html.contains(&link),
        "the HTML part carries the same link"
    );
    assert!(!mail.html.contains("<img"), "no remote assets");

    let token = mail.token("verify").unwrap();
    assert_eq!(app.verify(&token).await.status, 204);
    let me = app.me(&registered.access_token()).await;
    assert_eq!(me.body["email_verified"], true, "{}", me.text);
    let refreshed = app.refresh(&registered.refresh_token()).await;
    assert_eq!(
        bool_claim(&refreshed.access_token(), "email_verified"),
        Some(true)
    );
    assert!(
        app.event_types(&refreshed.access_token())
            .await
            .contains(&"email_verified".to_owned())
    );

    app.verify(&token).await.assert_problem(400, "invalid_link");
    app.verify("not-a-token")
        .await
        .assert_problem(400, "invalid_link");
    app.verify(&"A".repeat(43))
        .await
        .assert_problem(400, "invalid_link");
}

#[tokio::test]
async fn with_verification_required_an_account_signs_in_only_once_verified() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "required").await;
    let registered = app.register("bob@example.com", STRONG_PASSWORD).await;
    assert_eq!(registered.status, 202, "{}", registered.text);
    assert_eq!(registered.body, json!({"status": "verification_sent"}));
    assert!(
        registered.set_cookies().is_empty(),
        "no session before verification"
    );

    app.login("bob@example.com", "a wrong password entirely")
        .await
        .assert_problem(401, "invalid_credentials");
    app.login("bob@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(403, "email_unverified");

    // A lost mail: the resend's link works as well.
    let resent = app
        .post_json(
            "/api/v1/auth/verify-email/resend",
            &json!({"email": "Bob@Example.com"}),
        )
        .await;
    assert_eq!(
        (resent.status, resent.body.clone()),
        (202, json!({"status": "verification_sent"}))
    );
    let token = sink
        .nth_mail("bob@example.com", 2)
        .await
        .token("verify")
        .unwrap();
    assert_eq!(app.verify(&token).await.status, 204);

    let signed_in = app.login("bob@example.com", STRONG_PASSWORD).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    assert_eq!(
        bool_claim(&signed_in.access_token(), "email_verified"),
        Some(true)
    );
    assert_eq!(signed_in.body["user"]["email_verified"], true);
}

#[tokio::test]
async fn with_verification_required_a_taken_email_answers_as_a_new_one_and_its_owner_is_told() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "required").await;
    let first = app.register("cat@example.com", STRONG_PASSWORD).await;
    let token = sink
        .nth_mail("cat@example.com", 1)
        .await
        .token("verify")
        .unwrap();
    app.verify(&token).await;

    let taken = app
        .register("CAT@example.com", "another fine passphrase here")
        .await;
    let new = app
        .register("dan@example.com", "another fine passphrase here")
        .await;
    assert_alike(&taken, &new);
    assert_alike(&first, &new);

    let notice = sink.nth_mail("cat@example.com", 2).await;
    assert!(notice.subject.contains("tried to sign up"), "{notice:?}");
    assert_eq!(notice.link("verify"), None, "the notice carries no link");
    assert!(
        sink.nth_mail("dan@example.com", 1)
            .await
            .token("verify")
            .is_some()
    );
    // The owner's password is unchanged; the attempt made nothing.
    assert_eq!(
        app.login("cat@example.com", STRONG_PASSWORD).await.status,
        200
    );
    app.login("cat@example.com", "another fine passphrase here")
        .await
        .assert_problem(401, "invalid_credentials");
    // A weak password is refused the same way for both.
    let weak_taken = app.register("cat@example.com", "password").await;
    let weak_new = app.register("eve@example.com", "password").await;
    weak_taken.assert_problem(422, "validation_failed");
    assert_eq!(weak_taken.body["errors"], weak_new.body["errors"]);
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_ends_every_session_and_works_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "off").await;
    let first = app.signed_up("fay@example.com").await;
    let second = app.login("fay@example.com", STRONG_PASSWORD).await;

    let requested = app.request_reset("fay@example.com").await;
    assert_eq!(requested.status, 202, "{}", requested.text);
    let mail = sink.nth_mail("fay@example.com", 1).await;
    assert!(
        mail.link("reset")
            .unwrap()
            .starts_with("https://app.example.com/reset/#token=")
    );
    let token = mail.token("reset").unwrap();

    // A password the policy refuses leaves the link working.
    let weak = app.confirm_reset(&token, "password1").await;
    weak.assert_problem(422, "validation_failed");
    assert!(weak.body["errors"]["new_password"].is_array());

    assert_eq!(app.confirm_reset(&token, NEW_PASSWORD).await.status, 204);
    for session in [&first, &second] {
        app.me(&session.access_token())
            .await
            .assert_problem(401, "invalid_token");
        app.refresh(&session.refresh_token())
            .await
            .assert_problem(401, "invalid_token");
    }
    app.login("fay@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    let signed_in = app.login("fay@example.com", NEW_PASSWORD).await;
    assert_eq!(signed_in.status, 200);
    assert!(
        signed_in.body["user"].get("email_verified").is_none(),
        "not shown while verification is off"
    );
    let events = app.event_types(&signed_in.access_token()).await;
    assert!(events.contains(&"password_reset".to_owned()), "{events:?}");
    assert!(
        events.contains(&"password_reset_requested".to_owned()),
        "{events:?}"
    );

    app.confirm_reset(&token, "yet another fine passphrase")
        .await
        .assert_problem(400, "invalid_link");
    let notice = sink.nth_mail("fay@example.com", 2).await;
    assert!(notice.subject.contains("was reset"), "{notice:?}");
    assert_eq!(notice.link("reset"), None);
}

#[tokio::test]
async fn expired_superseded_and_outdated_reset_links_are_refused() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "off").await;
    let signed_up = app.signed_up("gus@example.com").await;

    app.request_reset("gus@example.com").await;
    let superseded = sink
        .nth_mail("gus@example.com", 1)
        .await
        .token("reset")
        .unwrap();
    app.request_reset("gus@example.com").await;
    let newer = sink
        .nth_mail("gus@example.com", 2)
        .await
        .token("reset")
        .unwrap();
    app.confirm_reset(&superseded, NEW_PASSWORD)
        .await
        .assert_problem(400, "invalid_link");

    // Thirty minutes later (moved back in the database rather than waited for).
    app.db
        .client()
        .await
        .execute(
            "UPDATE email_tokens SET created_at = created_at - interval '31 minutes', \
             expires_at = expires_at - interval '31 minutes'",
            &[],
        )
        .await
        .unwrap();
    app.confirm_reset(&newer, NEW_PASSWORD)
        .await
        .assert_problem(400, "invalid_link");

    // A password change kills a link mailed before it.
    app.request_reset("gus@example.com").await;
    let before_change = sink
        .nth_mail("gus@example.com", 3)
        .await
        .token("reset")
        .unwrap();
    let changed = app
        .send_json_with_token(
            Method::POST,
            "/api/v1/me/password",
            &signed_up.access_token(),
            &json!({"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.text);
    app.confirm_reset(&before_change, "yet another fine passphrase")
        .await
        .assert_problem(400, "invalid_link");
    assert_eq!(app.login("gus@example.com", NEW_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn a_reset_request_answers_alike_for_known_and_unknown_emails_within_its_limits() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "off").await;
    app.signed_up("hal@example.com").await;
    let known = app.request_reset("hal@example.com").await;
    let unknown = app.request_reset("nobody@example.com").await;
    let malformed = app.request_reset("not an email").await;
    assert_eq!(known.status, 202);
    assert_alike(&known, &unknown);
    assert_alike(&known, &malformed);
    sink.wait_for("hal@example.com", 1).await;

    // Per email, known or not, the same budget runs out the same way.
    for _ in 0..4 {
        app.request_reset("hal@example.com").await;
        app.request_reset("nobody@example.com").await;
    }
    let known = app.request_reset("hal@example.com").await;
    let unknown = app.request_reset("nobody@example.com").await;
    known.assert_problem(429, "too_many_requests");
    unknown.assert_problem(429, "too_many_requests");
    assert!(known.header("retry-after").is_some());
    assert!(
        sink.mails().iter().all(|mail| mail.to == "hal@example.com"),
        "nothing is mailed to an address without an account"
    );
}

#[tokio::test]
async fn while_the_mail_server_is_down_requests_succeed_and_every_mail_arrives_once_later() {
    let mut sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "optional").await;
    sink.stop().await;

    let emails: Vec<String> = (0..6).map(|i| format!("user{i}@example.com")).collect();
    for email in &emails {
        app.signed_up(email).await;
        assert_eq!(app.request_reset(email).await.status, 202);
    }
    // Let the worker fail at least once against the closed port.
    let app_ref = &app;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let failed = app_ref
            .outbox_rows("attempts > 0 AND sent_at IS NULL")
            .await;
        if failed > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the worker tried");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(sink.mails().is_empty());

    sink.resume().await;
    for email in &emails {
        let mails = sink.wait_for(email, 2).await;
        assert!(mails.iter().any(|mail| mail.token("verify").is_some()));
        assert!(mails.iter().any(|mail| mail.token("reset").is_some()));
    }
    wait_until_outbox_is_empty(&app).await;
    assert_eq!(
        sink.mails().len(),
        emails.len() * 2,
        "each mail exactly once"
    );
    let tokens_left = app.outbox_rows("link_token IS NOT NULL").await;
    assert_eq!(tokens_left, 0, "a sent mail keeps no token");
}

pub(crate) async fn wait_until_outbox_is_empty(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.outbox_rows("sent_at IS NULL").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the outbox drains");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // One more poll interval of both workers: nothing is sent again.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
}

#[tokio::test]
async fn two_instances_on_one_outbox_send_each_mail_once() {
    let sink = SmtpSink::start().await;
    let first = app_with_mail(&sink, "optional").await;
    let second = spawn_app_on(
        Arc::clone(&first.db),
        &[
            ("SMTP_URL", &sink.url()),
            ("AUTH_EMAIL_VERIFICATION", "optional"),
            ("AUTH_IP_REGISTRATIONS_PER_HOUR", "0"),
        ],
    )
    .await;
    let emails: Vec<String> = (0..16).map(|i| format!("pair{i}@example.com")).collect();
    let registrations = emails.iter().enumerate().map(|(i, email)| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.register(email, STRONG_PASSWORD)
    });
    for reply in futures::future::join_all(registrations).await {
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    for email in &emails {
        sink.wait_for(email, 1).await;
    }
    wait_until_outbox_is_empty(&first).await;
    let mails = sink.mails();
    assert_eq!(
        mails.len(),
        emails.len(),
        "each mail exactly once: {mails:?}"
    );
    for email in &emails {
        assert_eq!(mails.iter().filter(|mail| &mail.to == email).count(), 1);
    }
}

#[tokio::test]
async fn a_link_waiting_in_the_outbox_is_sealed_and_erased_once_sent() {
    const KEK: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let mut sink = SmtpSink::start().await;
    let app = spawn_app_with(&[
        ("SMTP_URL", &sink.url()),
        ("AUTH_KEY_ENCRYPTION_KEY", KEK),
        ("AUTH_EMAIL_VERIFICATION", "off"),
    ])
    .await;
    app.signed_up("ivy@example.com").await;
    sink.stop().await;
    assert_eq!(app.request_reset("ivy@example.com").await.status, 202);
    let db = app.db.client().await;
    let waiting = db
        .query_one(
            "SELECT link_token, token_sealed FROM outbox WHERE kind = 'password_reset'",
            &[],
        )
        .await
        .unwrap();
    let (stored, sealed): (Vec<u8>, bool) = (waiting.get(0), waiting.get(1));

    sink.resume().await;
    let token = sink
        .nth_mail("ivy@example.com", 1)
        .await
        .token("reset")
        .unwrap();
    assert!(sealed);
    assert!(
        !stored.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token waits sealed"
    );
    let stored_hashes: Vec<Vec<u8>> = db
        .query("SELECT token_hash FROM email_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        stored_hashes,
        [auth_core::token::sha256(token.as_bytes()).to_vec()]
    );
    wait_until_outbox_is_empty(&app).await;
    assert_eq!(app.outbox_rows("link_token IS NOT NULL").await, 0);
}

/// The hashing pool's count of PBKDF2 derivations, as `/metrics` shows it.
pub(crate) async fn derivations(app: &TestApp) -> u64 {
    let metrics = app.get("/metrics").await;
    metrics
        .text
        .lines()
        .find_map(|line| line.strip_prefix("latchkey_password_derivations_total "))
        .unwrap_or_else(|| panic!("no derivations counter in {}", metrics.text))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn with_verification_required_a_taken_and_a_new_email_each_spend_one_password_hash() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "required").await;
    let before = derivations(&app).await;
    let new = app.register("kim@example.com", STRONG_PASSWORD).await;
    let after_new = derivations(&app).await;
    let taken = app
        .register("KIM@example.com", "another fine passphrase here")
        .await;
    let after_taken = derivations(&app).await;
    assert_alike(&new, &taken);
    assert_eq!(new.status, 202, "{}", new.text);
    assert_eq!(after_new - before, 1, "a new email costs one hash");
    assert_eq!(
        after_taken - after_new,
        1,
        "a taken email costs the same hash, although nothing is stored"
    );
    // A password the policy refuses is refused before any hash, for both alike.
    app.register("kim@example.com", "password")
        .await
        .assert_problem(422, "validation_failed");
    app.register("lee@example.com", "password")
        .await
        .assert_problem(422, "validation_failed");
    assert_eq!(derivations(&app).await, after_taken);
}

#[tokio::test]
async fn a_verification_link_expires_after_24_hours() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "optional").await;
    let registered = app.signed_up("max@example.com").await;
    let token = sink
        .nth_mail("max@example.com", 1)
        .await
        .token("verify")
        .unwrap();
    // A day and a minute later (moved back in the database rather than waited for).
    app.db
        .client()
        .await
        .execute(
            "UPDATE email_tokens SET created_at = created_at - interval '24 hours 1 minute', \
             expires_at = expires_at - interval '24 hours 1 minute'",
            &[],
        )
        .await
        .unwrap();
    app.verify(&token).await.assert_problem(400, "invalid_link");
    let me = app.me(&registered.access_token()).await;
    assert_eq!(me.body["email_verified"], false, "{}", me.text);
}

#[tokio::test]
async fn a_verification_link_works_only_for_the_address_it_was_sent_to() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "optional").await;
    let registered = app.signed_up("ned@example.com").await;
    let token = sink
        .nth_mail("ned@example.com", 1)
        .await
        .token("verify")
        .unwrap();
    // The account's address changes (no endpoint does this yet; an operator or a future one
    // might): the link mailed to the old address must not vouch for the new one.
    let db = app.db.client().await;
    db.execute(
        "UPDATE users SET email = 'other@example.com' WHERE email = 'ned@example.com'",
        &[],
    )
    .await
    .unwrap();
    app.verify(&token).await.assert_problem(400, "invalid_link");
    let me = app.me(&registered.access_token()).await;
    assert_eq!(
        (me.body["email"].clone(), me.body["email_verified"].clone()),
        (json!("other@example.com"), json!(false)),
        "{}",
        me.text
    );
    // Back at the address it was sent to, a fresh link of the same kind works: the binding, not
    // the account, decided.
    db.execute(
        "UPDATE users SET email = 'ned@example.com' WHERE email = 'other@example.com'",
        &[],
    )
    .await
    .unwrap();
    app.post_json(
        "/api/v1/auth/verify-email/resend",
        &json!({"email": "ned@example.com"}),
    )
    .await;
    let fresh = sink
        .nth_mail("ned@example.com", 2)
        .await
        .token("verify")
        .unwrap();
    assert_eq!(app.verify(&fresh).await.status, 204);
}

/// Asserts a 429 as the contract says: `too_many_requests` with a positive `Retry-After`.
#[track_caller]
fn assert_limited(reply: &Reply) {
    reply.assert_problem(429, "too_many_requests");
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        (1..=3600).contains(&retry_after),
        "within the hour: {retry_after}"
    );
}

#[tokio::test]
async fn resends_are_limited_to_five_an_hour_per_account_known_or_not() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "required").await;
    assert_eq!(
        app.register("oli@example.com", STRONG_PASSWORD)
            .await
            .status,
        202
    );
    let app_ref = &app;
    let resend = move |email: &'static str| async move {
        app_ref
            .post_json(
                "/api/v1/auth/verify-email/resend",
                &json!({ "email": email }),
            )
            .await
    };
    for _ in 0..5 {
        assert_eq!(resend("oli@example.com").await.status, 202);
        assert_eq!(resend("nobody@example.com").await.status, 202);
    }
    let known = resend("OLI@example.com").await;
    let unknown = resend("nobody@example.com").await;
    assert_limited(&known);
    assert_limited(&unknown);
    assert_eq!(known.text, unknown.text);
    // Another account from the same network still has its own budget.
    assert_eq!(resend("pam@example.com").await.status, 202);
    // The registration's link and five resends: the sixth was not mailed.
    sink.wait_for("oli@example.com", 6).await;
    wait_until_outbox_is_empty(&app).await;
    assert_eq!(
        sink.mails()
            .iter()
            .filter(|mail| mail.to == "oli@example.com")
            .count(),
        6
    );
}

/// Sends `count` requests to `path`, each for another address, from one network.
async fn one_per_address(app: &TestApp, path: &str, count: usize, tag: &str) -> Vec<Reply> {
    let mut replies = Vec::new();
    for i in 0..count {
        replies.push(
            app.post_json(path, &json!({ "email": format!("{tag}{i}@example.com") }))
                .await,
        );
    }
    replies
}

#[tokio::test]
async fn resends_are_limited_to_thirty_an_hour_per_client_network() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "required").await;
    let path = "/api/v1/auth/verify-email/resend";
    for reply in one_per_address(&app, path, 30, "net").await {
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    // A fresh address, within its own budget: the network's is spent.
    assert_limited(
        &app.post_json(path, &json!({"email": "fresh@example.com"}))
            .await,
    );
}

#[tokio::test]
async fn reset_requests_are_limited_to_thirty_an_hour_per_client_network() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, "off").await;
    app.signed_up("quin@example.com").await;
    let path = "/api/v1/auth/password-reset";
    for reply in one_per_address(&app, path, 30, "reset").await {
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    // Even an account with its own budget untouched gets no link from this network now.
    assert_limited(&app.request_reset("quin@example.com").await);
    wait_until_outbox_is_empty(&app).await;
    assert!(
        sink.mails()
            .iter()
            .all(|mail| mail.to != "quin@example.com"),
        "no link was mailed"
    );
}
