//! The error model and the headers every response carries.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Reply, STRONG_PASSWORD, spawn_app, spawn_app_with};

#[tokio::test]
async fn malformed_json_and_wrong_shapes_are_invalid_requests() {
    let app = spawn_app().await;
    let send = |body: &'static str| {
        let request = app
            .http
            .post(app.url("/api/v1/auth/register"))
            .header("content-type", "application/json")
            .body(body);
        async move { Reply::from(request.send().await.unwrap()).await }
    };
    for body in [
        "{",
        "",
        "[1,2]",
        "{\"email\": \"ann@example.com\"}",
        "{\"email\": 5, \"password\": \"x\"}",
        "null",
    ] {
        let reply = send(body).await;
        reply.assert_problem(400, "invalid_request");
        assert!(
            !reply.text.contains("line"),
            "no parser text reaches the client: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_unsupported() {
    let app = spawn_app().await;
    let body = json!({"email": "ann@example.com", "password": STRONG_PASSWORD}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .http
            .post(app.url("/api/v1/auth/register"))
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Reply::from(request.send().await.unwrap())
            .await
            .assert_problem(415, "unsupported_media_type");
    }
    let with_charset = app
        .http
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(with_charset.status(), 201);
}

#[tokio::test]
async fn bodies_over_16_kib_are_too_large() {
    let app = spawn_app().await;
    let big = json!({"email": "ann@example.com", "password": "x".repeat(17 * 1024)});
    app.post_json("/api/v1/auth/register", &big)
        .await
        .assert_problem(413, "payload_too_large");
    let just_under = json!({"email": "ann@example.com", "password": "x".repeat(16 * 1024 - 100)});
    app.post_json("/api/v1/auth/login", &just_under)
        .await
        .assert_problem(401, "invalid_credentials");

    // A chunked body declares no length; the limit must hold while it is read.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let chunk = "x".repeat(8 * 1024);
    let mut request = String::from(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..3 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"));
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let app = spawn_app().await;
    app.get("/api/v1/nothing")
        .await
        .assert_problem(404, "not_found");
    app.post_json("/api/v1/nothing", &json!({}))
        .await
        .assert_problem(404, "not_found");
    app.get("/").await.assert_problem(404, "not_found");
}

#[tokio::test]
async fn wrong_methods_are_405_problems_with_allow() {
    let app = spawn_app().await;
    let reply = app.get("/api/v1/auth/login").await;
    reply.assert_problem(405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("POST"));
    let reply = app.post_json("/api/v1/me", &json!({})).await;
    reply.assert_problem(405, "method_not_allowed");
    assert!(reply.header("allow").unwrap().contains("GET"));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_nosniff() {
    let app = spawn_app().await;
    for reply in [
        app.get("/healthz").await,
        app.get("/api/v1/me").await,
        app.get("/nope").await,
    ] {
        let id = reply.header("x-request-id").expect("x-request-id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
    let echoed = Reply::from(
        app.http
            .get(app.url("/healthz"))
            .header("x-request-id", "trace-abc.123")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-abc.123"));
    for bad in ["has space", &"x".repeat(200), "quote\"d"] {
        let replaced = Reply::from(
            app.http
                .get(app.url("/healthz"))
                .header("x-request-id", bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let id = replaced.header("x-request-id").unwrap();
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "an invalid id is replaced: {id}"
        );
    }
}

#[tokio::test]
async fn health_and_readiness_follow_the_database() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);

    // Take the database away under the running service.
    let admin =
        crate::helpers::admin_client(&crate::helpers::no_tls(&crate::helpers::admin_url())).await;
    admin
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", app.db.name))
        .await
        .unwrap();

    assert_eq!(
        app.get("/healthz").await.status,
        200,
        "the process still serves"
    );
    app.get("/readyz").await.assert_problem(503, "unavailable");
    let login = app.login("ann@example.com", STRONG_PASSWORD).await;
    login.assert_problem(503, "unavailable");
    assert!(
        !login.text.to_lowercase().contains("database \""),
        "no database text: {}",
        login.text
    );
    app.me(&registered.access_token())
        .await
        .assert_problem(503, "unavailable");
    let logout = Reply::from(
        app.http
            .post(app.url("/api/v1/auth/logout"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        logout.status, 204,
        "signing out with nothing to revoke needs no database"
    );
}

#[tokio::test]
async fn a_static_folder_is_served_beside_the_api() {
    let dir = std::env::temp_dir().join(format!("latchkey-static-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>Latchkey</title>",
    )
    .unwrap();
    let app = spawn_app_with(&[("STATIC_DIR", dir.to_str().unwrap())]).await;
    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("Latchkey"));
    app.get("/api/v1/nothing")
        .await
        .assert_problem(404, "not_found");
    app.post_json("/api/v1/nothing", &json!({}))
        .await
        .assert_problem(404, "not_found");
    app.get("/missing.css")
        .await
        .assert_problem(404, "not_found");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn bodies_must_be_json_objects_and_null_means_no_body() {
    let app = spawn_app().await;
    let send = |path: &'static str, body: &'static str| {
        let request = app
            .http
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(body);
        async move { Reply::from(request.send().await.unwrap()).await }
    };
    send(
        "/api/v1/auth/register",
        "[\"ann@example.com\", \"correct horse battery staple\"]",
    )
    .await
    .assert_problem(400, "invalid_request");
    send("/api/v1/auth/logout", "[null]")
        .await
        .assert_problem(400, "invalid_request");
    assert_eq!(send("/api/v1/auth/logout", "null").await.status, 204);
    send("/api/v1/auth/refresh", "null")
        .await
        .assert_problem(401, "invalid_token");
}
