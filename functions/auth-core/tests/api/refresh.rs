use std::time::Duration;

use serde_json::json;

use crate::helpers::{Reply, spawn_app, spawn_app_on, spawn_app_with};

#[tokio::test]
async fn refresh_rotates_the_token_and_keeps_the_session() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    let reply = app.refresh(&registered.refresh_token()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_ne!(reply.refresh_token(), registered.refresh_token());
    assert_eq!(reply.refresh_cookie(), Some(reply.refresh_token()));
    assert_eq!(reply.body["user"], registered.body["user"]);
    let refresh_expires_in = reply.body["refresh_expires_in"].as_u64().unwrap();
    assert!(
        (2_591_990..=2_592_000).contains(&refresh_expires_in),
        "counts to the session's absolute end"
    );
    assert_eq!(app.me(&reply.access_token()).await.status, 200);
    // The successor rotates in its turn.
    let next = app.refresh(&reply.refresh_token()).await;
    assert_eq!(next.status, 200);
    assert_ne!(next.refresh_token(), reply.refresh_token());
    let db = app.db.client().await;
    let live: i64 = db
        .query_one(
            "SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 1, "one live refresh token per session");
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_invalid() {
    let app = spawn_app().await;
    app.refresh("A".repeat(43).as_str())
        .await
        .assert_problem(401, "invalid_token");
    app.refresh("short")
        .await
        .assert_problem(401, "invalid_token");
    app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": 12}))
        .await
        .assert_problem(400, "invalid_request");
    let none = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/refresh"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    none.assert_problem(401, "invalid_token");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn eight_concurrent_refreshes_of_one_token_all_get_the_same_successor() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.refresh_token();
    let replies = futures::future::join_all((0..8).map(|_| app.refresh(&token))).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let successor = replies[0].refresh_token();
    assert_ne!(successor, token);
    assert!(
        replies.iter().all(|r| r.refresh_token() == successor),
        "{replies:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.refresh_cookie() == Some(successor.clone()))
    );
    let db = app.db.client().await;
    let live: i64 = db
        .query_one(
            "SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 1);
    assert_eq!(
        app.refresh(&successor).await.status,
        200,
        "the shared successor works"
    );
}

#[tokio::test]
async fn reuse_after_the_grace_window_revokes_the_session_on_every_instance() {
    let first = spawn_app_with(&[("AUTH_REFRESH_REUSE_GRACE_SECS", "1")]).await;
    let second = spawn_app_on(first.db.clone(), &[("AUTH_REFRESH_REUSE_GRACE_SECS", "1")]).await;
    let registered = first.signed_up("ann@example.com").await;
    let old = registered.refresh_token();
    let rotated = first.refresh(&old).await;
    assert_eq!(rotated.status, 200);
    let access = rotated.access_token();
    assert_eq!(first.me(&access).await.status, 200);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    second
        .refresh(&old)
        .await
        .assert_problem(401, "invalid_token");

    first.me(&access).await.assert_problem(401, "invalid_token");
    first
        .me(&registered.access_token())
        .await
        .assert_problem(401, "invalid_token");
    second
        .refresh(&rotated.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
    // Another session of the same account is untouched.
    let other = first
        .login("ann@example.com", crate::helpers::STRONG_PASSWORD)
        .await;
    assert_eq!(second.me(&other.access_token()).await.status, 200);
}

#[tokio::test]
async fn the_refresh_cookie_works_from_our_origin_and_is_refused_from_others() {
    let app = spawn_app_with(&[("AUTH_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let registered = app.signed_up("ann@example.com").await;
    let cookie = format!("refresh_token={}", registered.refresh_token());
    let send = |origin: Option<&'static str>, cookie: String| {
        let mut request = app
            .http
            .post(app.url("/api/v1/auth/refresh"))
            .header("cookie", cookie);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { Reply::from(request.send().await.unwrap()).await }
    };
    send(Some("https://evil.example.net"), cookie.clone())
        .await
        .assert_problem(403, "forbidden_origin");
    send(Some("null"), cookie.clone())
        .await
        .assert_problem(403, "forbidden_origin");

    // The service's own origin is AUTH_ISSUER's (http://localhost:8080 by default); the Host a
    // request names does not widen it.
    let spoofed_host = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/refresh"))
            .header("cookie", cookie.clone())
            .header("origin", "http://evil.example.net")
            .header("host", "evil.example.net")
            .send()
            .await
            .unwrap(),
    )
    .await;
    spoofed_host.assert_problem(403, "forbidden_origin");
    let same_origin = send(Some("http://localhost:8080"), cookie.clone()).await;
    assert_eq!(same_origin.status, 200, "{}", same_origin.text);
    let next_cookie = format!("refresh_token={}", same_origin.refresh_cookie().unwrap());
    let allowed = send(Some("https://app.example.com"), next_cookie.clone()).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    let no_origin = send(
        None,
        format!("refresh_token={}", allowed.refresh_cookie().unwrap()),
    )
    .await;
    assert_eq!(no_origin.status, 200, "non-browser clients send no Origin");
}

#[tokio::test]
async fn a_body_token_needs_no_origin_check() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    let reply = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/refresh"))
            .header("origin", "https://evil.example.net")
            .json(&json!({"refresh_token": registered.refresh_token()}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "a token in the body is not ambient authority"
    );
}

#[tokio::test]
async fn a_json_body_without_the_field_falls_back_to_the_cookie() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    let reply = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/refresh"))
            .header(
                "cookie",
                format!("refresh_token={}", registered.refresh_token()),
            )
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_ne!(reply.refresh_token(), registered.refresh_token());
}

#[tokio::test]
async fn a_detected_reuse_is_an_event_the_owner_sees() {
    let app = spawn_app_with(&[("AUTH_REFRESH_REUSE_GRACE_SECS", "0")]).await;
    let stolen = app.signed_up("ann@example.com").await;
    let other = app
        .login("ann@example.com", crate::helpers::STRONG_PASSWORD)
        .await;
    assert_eq!(app.refresh(&stolen.refresh_token()).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.refresh(&stolen.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
    let events = app
        .get_with_token("/api/v1/me/events", &other.access_token())
        .await;
    assert_eq!(
        events.body["events"][0]["type"], "refreshed_reuse_detected",
        "{}",
        events.text
    );
}
