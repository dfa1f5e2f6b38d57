use serde_json::json;

use crate::helpers::{STRONG_PASSWORD, spawn_app};

#[tokio::test]
async fn registration_returns_a_token_response_and_the_refresh_cookie() {
    let app = spawn_app().await;
    let reply = app.register("  Ann@Example.COM ", STRONG_PASSWORD).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = &reply.body;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["refresh_expires_in"], 2_592_000);
    assert_eq!(body["user"]["email"], "ann@example.com");
    let id = body["user"]["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    time::OffsetDateTime::parse(
        body["user"]["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let refresh = reply.refresh_token();
    assert!(refresh.len() >= 43, "at least 256 bits");
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1);
    crate::helpers::assert_same_cookie(
        &cookies[0],
        &format!(
            "refresh_token={refresh}; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age=2592000; Secure"
        ),
    );
}

#[tokio::test]
async fn the_cookie_drops_secure_only_when_configured() {
    let app = crate::helpers::spawn_app_with(&[("AUTH_COOKIE_SECURE", "false")]).await;
    let reply = app.signed_up("ann@example.com").await;
    assert!(!reply.set_cookies()[0].contains("Secure"));
}

#[tokio::test]
async fn only_a_hash_of_the_password_and_refresh_token_is_stored() {
    let app = spawn_app().await;
    let reply = app.signed_up("ann@example.com").await;
    let db = app.db.client().await;
    let row = db
        .query_one("SELECT email, password_hash FROM users", &[])
        .await
        .unwrap();
    let stored: String = row.get(1);
    assert_eq!(row.get::<_, String>(0), "ann@example.com");
    assert!(
        stored.starts_with("$pbkdf2-sha256$i=1000,l=32$"),
        "{stored}"
    );
    assert!(!stored.contains(STRONG_PASSWORD));
    let refresh = reply.refresh_token();
    let hashes = db
        .query("SELECT token_hash FROM refresh_tokens", &[])
        .await
        .unwrap();
    assert_eq!(hashes.len(), 1);
    let hash: Vec<u8> = hashes[0].get(0);
    assert_ne!(hash, refresh.as_bytes());
    assert_eq!(
        hash,
        auth_core::token::refresh_token_hash(&refresh).to_vec()
    );
}

#[tokio::test]
async fn an_email_registers_once_whatever_its_case() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    app.register("ANN@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(409, "email_taken");
}

#[tokio::test]
async fn ten_concurrent_registrations_of_one_email_give_one_account() {
    let app = spawn_app().await;
    let attempts = (0..10).map(|i| {
        let app = &app;
        async move {
            app.register(
                if i % 2 == 0 {
                    "race@example.com"
                } else {
                    "RACE@example.com"
                },
                STRONG_PASSWORD,
            )
            .await
        }
    });
    let replies = futures::future::join_all(attempts).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let taken = replies
        .iter()
        .filter(|r| r.status == 409 && r.code() == "email_taken")
        .count();
    assert_eq!((created, taken), (1, 9), "{replies:?}");
    let db = app.db.client().await;
    let users: i64 = db
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    let sessions: i64 = db
        .query_one("SELECT count(*) FROM sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((users, sessions), (1, 1), "the losers left nothing behind");
}

#[tokio::test]
async fn bad_emails_and_passwords_get_422_with_reasons_for_each_field() {
    let app = spawn_app().await;
    let reply = app.register("not-an-email", "short").await;
    reply.assert_problem(422, "validation_failed");
    let errors = &reply.body["errors"];
    assert!(
        errors["email"][0].as_str().unwrap().contains('@'),
        "{errors}"
    );
    assert!(
        errors["password"][0]
            .as_str()
            .unwrap()
            .contains("at least 8"),
        "{errors}"
    );

    let weak = app.register("ann@example.com", "password123").await;
    weak.assert_problem(422, "validation_failed");
    let reasons = weak.body["errors"]["password"].as_array().unwrap();
    assert!(
        reasons.len() >= 2,
        "reasons and suggestions in words: {reasons:?}"
    );
    assert!(weak.body["errors"].get("email").is_none());

    let too_long = app.register("ann@example.com", &"Zq9!".repeat(65)).await;
    too_long.assert_problem(422, "validation_failed");
    assert!(
        too_long.body["errors"]["password"][0]
            .as_str()
            .unwrap()
            .contains("at most 256")
    );

    let no_domain_dot = app.register("ann@localhost", STRONG_PASSWORD).await;
    no_domain_dot.assert_problem(422, "validation_failed");
}

#[tokio::test]
async fn a_password_built_from_the_email_is_too_weak() {
    let app = spawn_app().await;
    app.register("zanzibarquokka@example.com", "zanzibarquokka1")
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test]
async fn passwords_are_compared_after_nfkc_normalisation() {
    let app = spawn_app().await;
    // The "fi" ligature and full-width digits fold to plain "fi" and "12".
    app.signed_up_with(
        "ann@example.com",
        "\u{FB01}gure skating \u{FF11}\u{FF12} harbour",
    )
    .await;
    assert_eq!(
        app.login("ann@example.com", "figure skating 12 harbour")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let reply = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "ann@example.com", "password": STRONG_PASSWORD, "admin": true}),
        )
        .await;
    assert_eq!(reply.status, 201);
}

impl crate::helpers::TestApp {
    pub async fn signed_up_with(&self, email: &str, password: &str) -> crate::helpers::Reply {
        let reply = self.register(email, password).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply
    }
}

async fn register_with_key(
    app: &crate::helpers::TestApp,
    email: &str,
    password: &str,
    key: &str,
) -> crate::helpers::Reply {
    crate::helpers::Reply::from(
        app.http
            .post(app.url("/api/v1/auth/register"))
            .header("idempotency-key", key)
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_registration_retried_with_its_idempotency_key_gets_the_same_answer() {
    use crate::helpers::STRONG_PASSWORD;
    let app = crate::helpers::spawn_app_with(&[("AUTH_IP_REGISTRATIONS_PER_HOUR", "0")]).await;
    let key = "6f1d0c5e-2b7a-4c1e-9a55-0d3c8f2b7e11";
    let first = register_with_key(&app, "ann@example.com", STRONG_PASSWORD, key).await;
    assert_eq!(first.status, 201, "{}", first.text);
    // The retry: the same answer for the same account, in a session of its own.
    let retry = register_with_key(&app, "Ann@Example.com", STRONG_PASSWORD, key).await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(retry.body["user"], first.body["user"]);
    assert_ne!(
        crate::helpers::claim(&retry.access_token(), "sid"),
        crate::helpers::claim(&first.access_token(), "sid")
    );
    assert_eq!(app.me(&retry.access_token()).await.status, 200);
    assert_eq!(app.me(&first.access_token()).await.status, 200);
    // Without the key the email is taken, as ever.
    app.register("ann@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(409, "email_taken");
    // The key used for anything else: another email, or the right email with another password.
    for (email, password) in [
        ("bob@example.com", STRONG_PASSWORD),
        ("ann@example.com", "a different but strong passphrase"),
    ] {
        let reused = register_with_key(&app, email, password, key).await;
        reused.assert_problem(422, "validation_failed");
        assert!(
            reused.body["errors"]["Idempotency-Key"].is_array(),
            "{}",
            reused.text
        );
    }
    // A key that cannot be one.
    register_with_key(&app, "cyd@example.com", STRONG_PASSWORD, &"k".repeat(256))
        .await
        .assert_problem(400, "invalid_request");
}

#[tokio::test]
async fn concurrent_registrations_with_one_key_make_one_account() {
    use crate::helpers::STRONG_PASSWORD;
    let app = crate::helpers::spawn_app_with(&[("AUTH_IP_REGISTRATIONS_PER_HOUR", "0")]).await;
    let attempts =
        (0..6).map(|_| register_with_key(&app, "ann@example.com", STRONG_PASSWORD, "one-key"));
    let replies = futures::future::join_all(attempts).await;
    assert!(
        replies.iter().all(|reply| reply.status == 201),
        "{replies:?}"
    );
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .map(|reply| reply.body["user"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn a_registration_key_answers_retries_for_a_day_then_counts_as_new() {
    use crate::helpers::STRONG_PASSWORD;
    let app = crate::helpers::spawn_app_with(&[("AUTH_IP_REGISTRATIONS_PER_HOUR", "0")]).await;
    let key = "registration-key-of-yesterday";
    let first = register_with_key(&app, "ann@example.com", STRONG_PASSWORD, key).await;
    assert_eq!(first.status, 201, "{}", first.text);
    // Within the day the key belongs to Ann's registration.
    register_with_key(&app, "bob@example.com", STRONG_PASSWORD, key)
        .await
        .assert_problem(422, "validation_failed");
    // A day and a minute later, before any housekeeping has deleted the row, the key is free.
    app.db
        .client()
        .await
        .execute(
            "UPDATE idempotency_keys SET created_at = created_at - interval '1 day 1 minute'",
            &[],
        )
        .await
        .unwrap();
    let later = register_with_key(&app, "bob@example.com", STRONG_PASSWORD, key).await;
    assert_eq!(later.status, 201, "{}", later.text);
    assert_ne!(later.body["user"]["id"], first.body["user"]["id"]);
    // Ann's own retry is no longer a replay: her email is simply taken.
    register_with_key(&app, "ann@example.com", STRONG_PASSWORD, "another-key")
        .await
        .assert_problem(409, "email_taken");
    let owner: uuid::Uuid = app
        .db
        .client()
        .await
        .query_one("SELECT user_id FROM idempotency_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        owner.to_string(),
        later.body["user"]["id"].as_str().unwrap()
    );
}
