//! CORS, the OpenAPI document, metrics, and what is stored at rest.

use serde_json::json;

use crate::helpers::{Reply, STRONG_PASSWORD, spawn_app, spawn_app_with};

#[tokio::test]
async fn cors_answers_only_for_allowed_origins_with_credentials() {
    let app = spawn_app_with(&[("AUTH_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = Reply::from(preflight("https://app.example.com").await.unwrap()).await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        allowed
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    let other = Reply::from(preflight("https://evil.example.net").await.unwrap()).await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    let actual = Reply::from(
        app.http
            .get(app.url("/healthz"))
            .header("origin", "https://app.example.com")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        actual
            .header("access-control-expose-headers")
            .unwrap()
            .contains("x-request-id")
    );

    let without = spawn_app().await;
    let reply = Reply::from(
        without
            .http
            .get(without.url("/healthz"))
            .header("origin", "https://app.example.com")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        None,
        "no CORS unless configured"
    );
}

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_one() {
    let app = spawn_app().await;
    let served = app.get("/api/v1/openapi.json").await;
    assert_eq!(served.status, 200);
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served.body, checked_in);
}

#[tokio::test]
async fn metrics_count_requests_logins_and_show_the_pools() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    app.login("ann@example.com", STRONG_PASSWORD).await;
    app.login("ann@example.com", "wrong wrong wrong").await;
    app.get("/api/v1/nothing").await;
    let reply = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert!(
        reply.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = reply.text().await.unwrap();
    for expected in [
        "latchkey_http_requests_total{method=\"POST\",route=\"/api/v1/auth/login\",status=\"200\"} 1",
        "latchkey_http_requests_total{method=\"POST\",route=\"/api/v1/auth/login\",status=\"401\"} 1",
        "latchkey_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "latchkey_logins_total{outcome=\"succeeded\"} 1",
        "latchkey_logins_total{outcome=\"failed\"} 1",
        "latchkey_http_request_duration_seconds_bucket{",
        "latchkey_password_hash_queue_depth 0",
        "latchkey_db_pool_connections{state=\"max\"} 16",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}

#[tokio::test]
async fn no_password_token_or_private_key_is_stored_in_clear() {
    const KEK: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let app = spawn_app_with(&[("AUTH_KEY_ENCRYPTION_KEY", KEK)]).await;
    let new_password = "velvet giraffe orbits quietly";
    let registered = app.signed_up("ann@example.com").await;
    let logged_in = app.login("ann@example.com", STRONG_PASSWORD).await;
    app.login("ann@example.com", "a wrong guess of a password")
        .await;
    let refreshed = app.refresh(&logged_in.refresh_token()).await;
    app.send_json_with_token(
        reqwest::Method::POST,
        "/api/v1/me/password",
        &refreshed.access_token(),
        &json!({"current_password": STRONG_PASSWORD, "new_password": new_password}),
    )
    .await;

    // Every row of every table, as text (bytea shows as hex).
    let db = app.db.client().await;
    let tables: Vec<String> = db
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(tables.len() >= 8, "{tables:?}");
    let mut dump = String::new();
    for table in &tables {
        for row in db
            .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
            .await
            .unwrap()
        {
            dump.push_str(row.get::<_, &str>(0));
            dump.push('\n');
        }
    }
    let kek = {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(KEK)
            .unwrap();
        <[u8; 32]>::try_from(bytes).unwrap()
    };
    let key_row = db
        .query_one("SELECT kid, private_key FROM signing_keys", &[])
        .await
        .unwrap();
    let private_key = auth_core::seal::open(&kek, key_row.get(0), key_row.get(1)).unwrap();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut secrets = vec![
        STRONG_PASSWORD.to_owned(),
        new_password.to_owned(),
        "a wrong guess of a password".to_owned(),
        hex(STRONG_PASSWORD.as_bytes()),
        hex(&private_key),
        hex(&private_key[private_key.len() - 100..]),
    ];
    for grant in [&registered, &logged_in, &refreshed] {
        secrets.push(grant.refresh_token());
        secrets.push(hex(grant.refresh_token().as_bytes()));
        secrets.push(grant.access_token());
        secrets.push(grant.access_token().rsplit('.').next().unwrap().to_owned());
    }
    for secret in &secrets {
        assert!(!dump.contains(secret.as_str()), "stored in clear: {secret}");
    }
    assert!(
        dump.contains("ann@example.com"),
        "the dump did read the tables"
    );
}

#[tokio::test]
async fn an_unexpected_fault_is_a_500_whose_body_says_nothing_of_it() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    // A schema the code does not expect: recording the next event fails with SQL's own error.
    app.db
        .client()
        .await
        .batch_execute("ALTER TABLE security_events RENAME COLUMN user_agent TO agent")
        .await
        .unwrap();
    let reply = app
        .send_json_with_token(
            reqwest::Method::DELETE,
            "/api/v1/sessions",
            &token,
            &json!({}),
        )
        .await;
    let reply = if reply.status == 204 {
        // Nothing to revoke records no event; a failed login does.
        app.login("ann@example.com", "not the password").await
    } else {
        reply
    };
    reply.assert_problem(500, "internal");
    assert!(reply.header("x-request-id").is_some());
    for leaked in [
        "user_agent",
        "column",
        "security_events",
        "42703",
        "SQL",
        "postgres",
    ] {
        assert!(!reply.text.contains(leaked), "{leaked} in {}", reply.text);
    }
}
