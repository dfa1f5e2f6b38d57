//! The contract through the Lambda: what docs/api.md promises, answered from events.

use crate::helpers::*;

/// `refresh_token=<token>; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age=<n>; Secure`
fn assert_refresh_cookie(reply: &Reply) {
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let expected = format!(
        "refresh_token={}; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age={}; Secure",
        reply.str("refresh_token"),
        reply.body["refresh_expires_in"]
    );
    assert_same_cookie(&cookies[0], &expected);
}

fn assert_token_response(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 900);
    // The session's absolute end: 30 days from the login that started it.
    let left = reply.body["refresh_expires_in"].as_u64().unwrap();
    assert!((2_591_900..=2_592_000).contains(&left), "{left}");
    assert_eq!(reply.body["user"]["email"], "ann@example.com");
    assert!(reply.str("access_token").split('.').count() == 3);
    assert_common_headers(reply);
    assert_refresh_cookie(reply);
}

#[tokio::test]
async fn registering_through_the_http_api_answers_201_with_the_refresh_cookie() {
    let (app, _db) = app().await;
    assert!(app.is_ready());
    let reply = send(&app, &event("auth-register.json")).await;
    assert_token_response(&reply, 201);
}

#[tokio::test]
async fn logging_in_through_a_function_url_answers_200_with_the_refresh_cookie() {
    let (app, _db) = app().await;
    assert_eq!(send(&app, &event("auth-register.json")).await.status, 201);
    let reply = send(&app, &event("auth-login-function-url.json")).await;
    assert_token_response(&reply, 200);
}

#[tokio::test]
async fn me_with_the_access_token_answers_200() {
    let (app, _db) = app().await;
    let registered = send(&app, &event("auth-register.json")).await;
    let reply = send(
        &app,
        &with_bearer(event("auth-me.json"), &registered.str("access_token")),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["id"], registered.body["user"]["id"]);
    assert_eq!(reply.body["email"], "ann@example.com");
    assert!(reply.body["created_at"].is_string());
    assert_common_headers(&reply);
}

#[tokio::test]
async fn me_with_the_sample_placeholder_token_is_a_401_with_www_authenticate() {
    let (app, _db) = app().await;
    let reply = send(&app, &event("auth-me.json")).await;
    reply.assert_problem(401, "invalid_token");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
}

#[tokio::test]
async fn a_malformed_body_is_a_400_problem() {
    let (app, _db) = app().await;
    let reply = send(&app, &event("auth-bad-body.json")).await;
    reply.assert_problem(400, "invalid_request");
    assert!(reply.set_cookies().is_empty());
}

#[tokio::test]
async fn the_refresh_cookie_arrives_through_the_cookies_field() {
    let (app, _db) = app().await;
    let registered = send(&app, &event("auth-register.json")).await;
    let mut refresh = event("auth-refresh-cookie.json");
    refresh["cookies"] =
        serde_json::json!([format!("refresh_token={}", registered.str("refresh_token"))]);
    let reply = send(&app, &refresh).await;
    assert_token_response(&reply, 200);
    assert_ne!(reply.str("refresh_token"), registered.str("refresh_token"));
}

#[tokio::test]
async fn the_client_address_is_the_source_ip_api_gateway_saw() {
    let (app, _db) = app().await;
    let registered = send(&app, &event("auth-register.json")).await;
    let sessions = send(
        &app,
        &with_bearer(
            with_path(event("auth-me.json"), "GET", "/api/v1/sessions"),
            &registered.str("access_token"),
        ),
    )
    .await;
    assert_eq!(sessions.status, 200, "{}", sessions.text);
    assert_eq!(sessions.body["sessions"][0]["ip"], "203.0.113.7");
    assert_eq!(sessions.body["sessions"][0]["user_agent"], "curl/8.5.0");
}

#[tokio::test]
async fn a_clients_request_id_is_echoed_and_an_unknown_route_is_a_404_problem() {
    let (app, _db) = app().await;
    let reply = send(
        &app,
        &with_header(
            with_path(event("auth-me.json"), "GET", "/nowhere"),
            "x-request-id",
            "trace-42",
        ),
    )
    .await;
    reply.assert_problem(404, "not_found");
    assert_eq!(reply.header("x-request-id"), Some("trace-42"));
}

#[tokio::test]
async fn the_jwks_and_readiness_answer_as_in_the_container() {
    let (app, _db) = app().await;
    let jwks = send(
        &app,
        &with_path(event("auth-me.json"), "GET", "/.well-known/jwks.json"),
    )
    .await;
    assert_eq!(jwks.status, 200, "{}", jwks.text);
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=300"));
    assert!(!jwks.body["keys"].as_array().unwrap().is_empty());
    let ready = send(&app, &with_path(event("auth-me.json"), "GET", "/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
}

#[tokio::test]
async fn an_unreachable_database_answers_503_unavailable_rather_than_a_bare_500() {
    // Nothing listens on port 1; the copy starts anyway and answers in the contract's terms.
    let app = app_on(
        "postgres://postgres@127.0.0.1:1/none?sslmode=disable",
        &[("DB_POOL_TIMEOUT_MS", "200")],
    )
    .await;
    assert!(!app.is_ready());
    let reply = send(&app, &event("auth-register.json")).await;
    reply.assert_problem(503, "unavailable");
    assert!(!reply.text.contains("127.0.0.1"), "{}", reply.text);
}

#[tokio::test]
async fn events_without_a_source_ip_do_not_share_one_network_budget() {
    let db = TestDatabase::create().await;
    let app = app_on(&db.url, &[("AUTH_IP_LOGINS_PER_MINUTE", "1")]).await;
    let mut anonymous = event("auth-login-function-url.json");
    anonymous["requestContext"]["http"]
        .as_object_mut()
        .unwrap()
        .remove("sourceIp");
    // Two clients API Gateway could not place: one bucket for both would let either lock the
    // other (and every such client) out.
    for attempt in 0..3 {
        let reply = send(&app, &anonymous).await;
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.text);
    }
    // A placed client still has its own budget.
    send(&app, &event("auth-login-function-url.json"))
        .await
        .assert_problem(401, "invalid_credentials");
    send(&app, &event("auth-login-function-url.json"))
        .await
        .assert_problem(429, "too_many_requests");
}
