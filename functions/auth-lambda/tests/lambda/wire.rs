//! What API Gateway gets back: the handler behind lambda_http's own adapter (what
//! `lambda_http::run` wraps it in), the response serialised as the runtime sends it.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Request, Service, service_fn};
use serde_json::Value;

use crate::helpers::*;

async fn invoke(app: &Arc<auth_lambda::App>, event: &Value) -> Value {
    let app = Arc::clone(app);
    let mut adapter = Adapter::from(service_fn(move |request: Request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(app.handle(request).await) }
    }));
    let payload: LambdaRequest = serde_json::from_value(event.clone()).expect("a v2 event");
    let response = adapter
        .call(LambdaEvent::new(payload, Context::default()))
        .await
        .expect("the handler never fails");
    serde_json::to_value(response).expect("serialisable")
}

#[tokio::test]
async fn the_refresh_cookie_goes_back_in_the_cookies_field_of_the_v2_payload() {
    let (app, _db) = app().await;
    let app = Arc::new(app);
    let reply = invoke(&app, &event("auth-register.json")).await;
    assert_eq!(reply["statusCode"], 201, "{reply}");
    assert_eq!(reply["isBase64Encoded"], false);
    let cookies = reply["cookies"].as_array().expect("cookies");
    assert_eq!(cookies.len(), 1);
    let cookie = cookies[0].as_str().unwrap();
    assert!(cookie.starts_with("refresh_token="), "{cookie}");
    // API Gateway v2 takes cookies from `cookies` only; a Set-Cookie header would be dropped.
    assert!(reply["headers"].get("set-cookie").is_none(), "{reply}");
    assert_eq!(reply["headers"]["cache-control"], "no-store");
    assert_eq!(reply["headers"]["x-content-type-options"], "nosniff");
    let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["user"]["email"], "ann@example.com");
    assert_same_cookie(
        cookie,
        &format!(
            "refresh_token={}; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age=2592000; Secure",
            body["refresh_token"].as_str().unwrap()
        ),
    );
}

#[tokio::test]
async fn a_problem_document_goes_back_as_text_not_base64() {
    let (app, _db) = app().await;
    let app = Arc::new(app);
    let reply = invoke(&app, &event("auth-bad-body.json")).await;
    assert_eq!(reply["statusCode"], 400, "{reply}");
    assert_eq!(reply["isBase64Encoded"], false);
    assert_eq!(reply["headers"]["content-type"], "application/problem+json");
    let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "invalid_request");
    assert!(
        reply["cookies"].as_array().is_none_or(|c| c.is_empty()),
        "{reply}"
    );
}

#[tokio::test]
async fn a_base64_encoded_body_is_decoded_before_the_router_sees_it() {
    let (app, _db) = app().await;
    let app = Arc::new(app);
    let mut register = event("auth-login-function-url.json");
    register["rawPath"] = "/api/v1/auth/register".into();
    register["requestContext"]["http"]["path"] = "/api/v1/auth/register".into();
    // {"email":"ann@example.com","password":"correct horse battery staple"}
    register["body"] = "eyJlbWFpbCI6ImFubkBleGFtcGxlLmNvbSIsInBhc3N3b3JkIjoiY29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZSJ9".into();
    register["isBase64Encoded"] = true.into();
    let reply = invoke(&app, &register).await;
    assert_eq!(reply["statusCode"], 201, "{reply}");
}
