//! The structure issue's five bugs: what a flow holds, what limits migrations run under, how a
//! slow request and a database fault are told apart, and the one password length rule.

use auth_core::Error;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{STRONG_PASSWORD, TestDatabase, base_settings, spawn_app_with};

#[tokio::test]
async fn a_one_connection_pool_serves_token_requests_across_a_key_ring_reload() {
    // Before the fix a login held its connection while the ring reload waited for a second one:
    // the reload failed after DB_POOL_TIMEOUT_MS and the old ring was kept.
    let app = spawn_app_with(&[("DB_POOL_SIZE", "1"), ("DB_POOL_TIMEOUT_MS", "2000")]).await;
    let registered = app.signed_up("ann@example.com").await;

    for (index, flow) in ["login", "refresh", "register"].into_iter().enumerate() {
        app.auth.keys.expire_ring();
        let expired_at = app.auth.keys.ring().loaded_at;
        let reply = match flow {
            "login" => app.login("ann@example.com", STRONG_PASSWORD).await,
            "refresh" => app.refresh(&registered.refresh_token()).await,
            _ => {
                app.register(&format!("new{index}@example.com"), STRONG_PASSWORD)
                    .await
            }
        };
        assert!(
            reply.status == 200 || reply.status == 201,
            "{flow}: {} {}",
            reply.status,
            reply.text
        );
        assert!(
            app.auth.keys.ring().loaded_at > expired_at,
            "{flow} re-read the key ring on the same one-connection pool"
        );
        assert_eq!(app.me(&reply.access_token()).await.status, 200, "{flow}");
    }
}

#[tokio::test]
async fn migrations_run_without_the_statement_limits_requests_run_under() {
    // A server-wide statement timeout far shorter than the migration: before the fix the
    // migration ran under the pool's limits and was cancelled.
    let db = TestDatabase::create().await;
    let mut settings = base_settings(&db.url);
    let url = settings["DATABASE_URL"].clone();
    settings.insert(
        "DATABASE_URL".into(),
        format!("{url}&options=-c%20statement_timeout%3D100%20-c%20lock_timeout%3D100"),
    );
    let config = auth_core::Config::from_lookup(|name| settings.get(name).cloned()).unwrap();
    let slow = refinery::Migration::unapplied("V1__slow", "SELECT pg_sleep(0.5)").unwrap();
    let mut runner = refinery::Runner::new(&[slow]);
    runner.set_migration_table_name("slow_migration_history");
    auth_core::db::migrate_with(&config, runner)
        .await
        .expect("a migration longer than statement_timeout completes");

    let applied: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM slow_migration_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);
    // Requests still run under the limit the operator set.
    let pool = auth_core::db::create_pool(&config).unwrap();
    let client = pool.get().await.unwrap();
    let error = client
        .batch_execute("SELECT pg_sleep(0.5)")
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_timeout_not_unavailable() {
    let app = spawn_app_with(&[
        ("HTTP_REQUEST_TIMEOUT_MS", "300"),
        ("AUTH_MAX_CONCURRENT_HASHES", "1"),
        ("AUTH_HASH_QUEUE", "4"),
    ])
    .await;
    app.signed_up("ann@example.com").await;
    let held = app.hold_hashing_slot().await;

    // The login waits in the hashing queue until its deadline passes; the database is fine.
    let late = app.login("ann@example.com", STRONG_PASSWORD).await;
    late.assert_problem(503, "timeout");
    assert_eq!(late.header("retry-after"), Some("1"));
    assert!(!late.text.contains("database"), "{}", late.text);

    held.release().await;
    assert_eq!(
        app.login("ann@example.com", STRONG_PASSWORD).await.status,
        200
    );
}

#[tokio::test]
async fn a_database_fault_is_told_from_an_outage_by_its_kind_not_its_text() {
    let db = TestDatabase::create().await;
    let client = db.client().await;
    let row = client.query_one("SELECT 1 AS one", &[]).await.unwrap();
    // A programming error whose message happens to contain "timeout".
    let fault = row.try_get::<_, i32>("timeout").unwrap_err();
    assert!(fault.to_string().contains("timeout"), "{fault}");
    assert!(matches!(Error::from(fault), Error::Internal { .. }));

    // A statement cancelled by the server's statement_timeout is an outage (SQLSTATE 57014).
    client
        .batch_execute("SET statement_timeout = 50")
        .await
        .unwrap();
    let cancelled = client
        .batch_execute("SELECT pg_sleep(1)")
        .await
        .unwrap_err();
    assert!(matches!(Error::from(cancelled), Error::Unavailable(_)));

    // A connection the server has dropped is an outage.
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    db.client()
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let gone = client.batch_execute("SELECT 1").await.unwrap_err();
    assert!(matches!(Error::from(gone), Error::Unavailable(_)));
}

#[tokio::test]
async fn the_password_length_rule_is_the_same_everywhere_and_costs_no_hash() {
    let app = spawn_app_with(&[
        ("AUTH_MAX_CONCURRENT_HASHES", "1"),
        ("AUTH_HASH_QUEUE", "0"),
    ])
    .await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let too_long = "x".repeat(auth_core::password::MAX_PASSWORD_CHARS + 44);
    let held = app.hold_hashing_slot().await;

    // With the only hashing slot taken, anything that reached the hash would be 503: these are
    // refused by the length rule before it.
    app.send_json_with_token(
        Method::POST,
        "/api/v1/me/password",
        &token,
        &json!({"current_password": too_long, "new_password": "another correct horse battery"}),
    )
    .await
    .assert_problem(403, "wrong_password");
    app.send_json_with_token(
        Method::DELETE,
        "/api/v1/me",
        &token,
        &json!({"password": too_long}),
    )
    .await
    .assert_problem(403, "wrong_password");
    app.login("ann@example.com", &too_long)
        .await
        .assert_problem(401, "invalid_credentials");
    held.release().await;

    // Registration applies the same limit (it scores and hashes in the pool, so it runs after the
    // release).
    let refused = app.register("bob@example.com", &too_long).await;
    refused.assert_problem(422, "validation_failed");
    assert!(
        refused.text.contains("at most 256 characters"),
        "{}",
        refused.text
    );
    let longest = "correct horse battery staple ".repeat(9);
    let longest: String = longest
        .chars()
        .take(auth_core::password::MAX_PASSWORD_CHARS)
        .collect();
    let registered = app.register("cyd@example.com", &longest).await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    let token = registered.access_token();
    // The longest password registration takes is one re-authentication takes.
    let deleted = app
        .send_json_with_token(
            Method::DELETE,
            "/api/v1/me",
            &token,
            &json!({"password": longest}),
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
}
