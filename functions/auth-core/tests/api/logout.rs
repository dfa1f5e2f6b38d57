use serde_json::json;

use crate::helpers::{Reply, TestApp, spawn_app};

fn assert_signed_out(reply: &Reply) {
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert!(reply.text.is_empty());
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].starts_with("refresh_token=; "), "{}", cookies[0]);
    assert!(cookies[0].contains("Max-Age=0"));
    assert!(cookies[0].contains("Path=/api/v1/auth"));
}

async fn assert_session_over(app: &TestApp, signed_in: &Reply) {
    app.me(&signed_in.access_token())
        .await
        .assert_problem(401, "invalid_token");
    app.refresh(&signed_in.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn logout_by_bearer_ends_that_session_only() {
    let app = spawn_app().await;
    let first = app.signed_up("ann@example.com").await;
    let second = app
        .login("ann@example.com", crate::helpers::STRONG_PASSWORD)
        .await;
    let reply = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/logout"))
            .bearer_auth(first.access_token())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_signed_out(&reply);
    assert_session_over(&app, &first).await;
    assert_eq!(app.me(&second.access_token()).await.status, 200);
}

#[tokio::test]
async fn logout_by_refresh_token_in_the_body() {
    let app = spawn_app().await;
    let signed_in = app.signed_up("ann@example.com").await;
    let reply = app
        .post_json(
            "/api/v1/auth/logout",
            &json!({"refresh_token": signed_in.refresh_token()}),
        )
        .await;
    assert_signed_out(&reply);
    assert_session_over(&app, &signed_in).await;
}

#[tokio::test]
async fn logout_by_cookie() {
    let app = spawn_app().await;
    let signed_in = app.signed_up("ann@example.com").await;
    let reply = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/logout"))
            .header(
                "cookie",
                format!("refresh_token={}", signed_in.refresh_token()),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_signed_out(&reply);
    assert_session_over(&app, &signed_in).await;
}

#[tokio::test]
async fn logout_by_cookie_from_a_foreign_origin_is_refused() {
    let app = spawn_app().await;
    let signed_in = app.signed_up("ann@example.com").await;
    let reply = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/logout"))
            .header(
                "cookie",
                format!("refresh_token={}", signed_in.refresh_token()),
            )
            .header("origin", "https://evil.example.net")
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_problem(403, "forbidden_origin");
    assert_eq!(app.me(&signed_in.access_token()).await.status, 200);
}

#[tokio::test]
async fn logout_without_a_usable_token_still_signs_out() {
    let app = spawn_app().await;
    assert_signed_out(
        &Reply::from(
            app.http
                .post(app.url("/api/v1/auth/logout"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    assert_signed_out(
        &app.post_json(
            "/api/v1/auth/logout",
            &json!({"refresh_token": "A".repeat(43)}),
        )
        .await,
    );
    assert_signed_out(&app.post_json("/api/v1/auth/logout", &json!({})).await);
    let bad_bearer = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/logout"))
            .bearer_auth("junk")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_signed_out(&bad_bearer);
}
