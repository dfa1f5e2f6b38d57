use reqwest::Method;
use serde_json::json;

use crate::helpers::{STRONG_PASSWORD, spawn_app};

const NEW_PASSWORD: &str = "velvet giraffe orbits quietly";

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_every_other_session() {
    let app = spawn_app().await;
    let current = app.signed_up("ann@example.com").await;
    let other = app.login_from("ann@example.com", "Other").await;
    let token = current.access_token();

    app.send_json_with_token(
        Method::POST,
        "/api/v1/me/password",
        &token,
        &json!({"current_password": "wrong password here", "new_password": NEW_PASSWORD}),
    )
    .await
    .assert_problem(403, "wrong_password");
    let weak = app
        .send_json_with_token(
            Method::POST,
            "/api/v1/me/password",
            &token,
            &json!({"current_password": STRONG_PASSWORD, "new_password": "password1"}),
        )
        .await;
    weak.assert_problem(422, "validation_failed");
    assert!(
        weak.body["errors"]["new_password"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    app.send_json_with_token(
        Method::POST,
        "/api/v1/me/password",
        &token,
        &json!({"current_password": STRONG_PASSWORD}),
    )
    .await
    .assert_problem(400, "invalid_request");
    assert_eq!(
        app.me(&other.access_token()).await.status,
        200,
        "failed attempts change nothing"
    );

    let changed = app
        .send_json_with_token(
            Method::POST,
            "/api/v1/me/password",
            &token,
            &json!({"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.text);
    app.me(&other.access_token())
        .await
        .assert_problem(401, "invalid_token");
    app.refresh(&other.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(
        app.me(&token).await.status,
        200,
        "the session that changed it lives on"
    );
    assert_eq!(app.refresh(&current.refresh_token()).await.status, 200);
    app.login("ann@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(app.login("ann@example.com", NEW_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn deleting_the_account_removes_everything_and_frees_the_email() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    let other = app.login_from("ann@example.com", "Other").await;
    let token = registered.access_token();
    app.send_json_with_token(
        Method::DELETE,
        "/api/v1/me",
        &token,
        &json!({"password": "not my password"}),
    )
    .await
    .assert_problem(403, "wrong_password");
    let no_body = crate::helpers::Reply::from(
        app.http
            .delete(app.url("/api/v1/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    no_body.assert_problem(415, "unsupported_media_type");
    assert_eq!(app.me(&token).await.status, 200);

    let deleted = app
        .send_json_with_token(
            Method::DELETE,
            "/api/v1/me",
            &token,
            &json!({"password": STRONG_PASSWORD}),
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    for signed_in in [&registered, &other] {
        app.me(&signed_in.access_token())
            .await
            .assert_problem(401, "invalid_token");
        app.refresh(&signed_in.refresh_token())
            .await
            .assert_problem(401, "invalid_token");
    }
    let db = app.db.client().await;
    for table in ["users", "sessions", "refresh_tokens", "security_events"] {
        let rows: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "{table} still holds the account's rows");
    }
    let again = app.register("ann@example.com", NEW_PASSWORD).await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_ne!(again.body["user"]["id"], registered.body["user"]["id"]);
}

#[tokio::test]
async fn security_events_record_what_happened_newest_first() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    app.login("ann@example.com", "a wrong password entirely")
        .await;
    let phone = app.login_from("ann@example.com", "Phone/9").await;
    let rotated = app.refresh(&registered.refresh_token()).await;
    let phone_sid = crate::helpers::claim(&phone.access_token(), "sid");
    app.delete_with_token(
        &format!("/api/v1/sessions/{phone_sid}"),
        &rotated.access_token(),
    )
    .await;
    app.send_json_with_token(
        Method::POST,
        "/api/v1/me/password",
        &rotated.access_token(),
        &json!({"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD}),
    )
    .await;
    let reply = app
        .get_with_token("/api/v1/me/events", &rotated.access_token())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let events = reply.body["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "password_changed",
            "session_revoked",
            "login_succeeded",
            "login_failed",
            "registered"
        ]
    );
    assert_eq!(events[2]["user_agent"], "Phone/9");
    for event in events {
        assert_eq!(event["ip"], "127.0.0.1");
        assert!(event["at"].is_string());
    }
    // Signing out and reuse of a rotated token are recorded too.
    app.post_json(
        "/api/v1/auth/logout",
        &json!({"refresh_token": rotated.refresh_token()}),
    )
    .await;
    let fresh = app.login("ann@example.com", NEW_PASSWORD).await;
    let first_types =
        |reply: crate::helpers::Reply| reply.body["events"][0]["type"].as_str().unwrap().to_owned();
    assert_eq!(
        first_types(
            app.get_with_token("/api/v1/me/events", &fresh.access_token())
                .await
        ),
        "login_succeeded"
    );
    let types: Vec<String> = app
        .get_with_token("/api/v1/me/events", &fresh.access_token())
        .await
        .body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(types.contains(&"logged_out".to_owned()), "{types:?}");
}

#[tokio::test]
async fn at_most_fifty_events_are_returned() {
    let app = spawn_app_with_generous_limits().await;
    let registered = app.signed_up("ann@example.com").await;
    let db = app.db.client().await;
    let user_id = registered.user_id();
    for i in 0..60 {
        db.execute(
            "INSERT INTO security_events (id, user_id, type, at) VALUES ($1, $2, 'login_succeeded', now() - make_interval(secs => $3))",
            &[&uuid::Uuid::now_v7(), &user_id, &f64::from(i + 1)],
        )
        .await
        .unwrap();
    }
    let reply = app
        .get_with_token("/api/v1/me/events", &registered.access_token())
        .await;
    let events = reply.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 50);
    assert_eq!(events[0]["type"], "registered", "newest first");
}

#[tokio::test]
async fn an_accounts_history_keeps_its_newest_two_hundred_events() {
    let app = spawn_app_with_generous_limits().await;
    let registered = app.signed_up("ann@example.com").await;
    let db = app.db.client().await;
    let user_id = registered.user_id();
    // 250 failures older than the registration, one second apart.
    db.execute(
        "INSERT INTO security_events (id, user_id, type, at) \
         SELECT gen_random_uuid(), $1, 'login_failed', now() - make_interval(secs => g) \
         FROM generate_series(1, 250) AS g",
        &[&user_id],
    )
    .await
    .unwrap();

    assert_eq!(
        app.login("ann@example.com", STRONG_PASSWORD).await.status,
        200
    );

    let count = |kind: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT count(*) FROM security_events WHERE user_id = $1 AND type = $2",
                &[&user_id, &kind],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    // The login's event makes room for itself: the oldest failures went, the newest stayed.
    assert_eq!(count("login_succeeded").await, 1);
    assert_eq!(count("registered").await, 1);
    assert_eq!(count("login_failed").await, 198);
    let oldest_kept: f64 = db
        .query_one(
            "SELECT extract(epoch FROM now() - min(at))::float8 FROM security_events WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        oldest_kept < 220.0,
        "the oldest kept is {oldest_kept} s old"
    );
}

async fn spawn_app_with_generous_limits() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await
}
