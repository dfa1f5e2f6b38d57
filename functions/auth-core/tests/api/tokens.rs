use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Signs `claims` with the service's own current key, read from the database, as only the
/// service could.
async fn sign_with_service_key(app: &TestApp, claims: &Value) -> String {
    let db = app.db.client().await;
    let row = db
        .query_one(
            "SELECT kid, private_key FROM signing_keys ORDER BY signs_from DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let kid: String = row.get(0);
    let der: Vec<u8> = row.get(1);
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&der)).unwrap()
}

fn claims_of(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .unwrap()
        .claims
}

#[tokio::test]
async fn access_tokens_carry_every_claim_and_verify_against_the_jwks() {
    let app = spawn_app().await;
    let reply = app.signed_up("ann@example.com").await;
    let token = reply.access_token();

    let jwks_reply = app.get("/.well-known/jwks.json").await;
    assert_eq!(jwks_reply.status, 200);
    assert_eq!(
        jwks_reply.header("cache-control"),
        Some("public, max-age=300")
    );
    let jwks: JwkSet = serde_json::from_value(jwks_reply.body.clone()).unwrap();
    for key in &jwks_reply.body["keys"].as_array().unwrap().clone() {
        assert!(key.get("d").is_none(), "no private part in the JWKS");
    }

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("kid");
    let jwk = jwks.find(&kid).expect("the kid is in the JWKS");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["latchkey"]);
    validation.set_issuer(&["http://localhost:8080"]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let claims =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims;
    assert_eq!(claims["sub"], reply.body["user"]["id"]);
    assert_eq!(claims["iss"], "http://localhost:8080");
    assert_eq!(claims["aud"], "latchkey");
    uuid::Uuid::parse_str(claims["sid"].as_str().unwrap()).unwrap();
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now()).abs() < 60);
    assert_eq!(claims["exp"].as_i64().unwrap(), iat + 900);

    let other = app
        .login("ann@example.com", crate::helpers::STRONG_PASSWORD)
        .await;
    assert_ne!(
        claims_of(&other.access_token())["jti"],
        claims["jti"],
        "jti is unique"
    );
    assert_ne!(
        claims_of(&other.access_token())["sid"],
        claims["sid"],
        "each login is its own session"
    );
}

#[tokio::test]
async fn issuer_and_audience_come_from_the_configuration() {
    let app = crate::helpers::spawn_app_with(&[
        ("AUTH_ISSUER", "https://auth.example.com"),
        ("AUTH_AUDIENCE", "shop"),
    ])
    .await;
    let claims = claims_of(&app.signed_up("ann@example.com").await.access_token());
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(claims["aud"], "shop");
}

#[tokio::test]
async fn expiry_allows_thirty_seconds_of_clock_skew_and_no_more() {
    let app = spawn_app().await;
    let reply = app.signed_up("ann@example.com").await;
    let mut claims = claims_of(&reply.access_token());
    claims["iat"] = json!(now() - 1000);
    claims["exp"] = json!(now() - 20);
    let within_leeway = sign_with_service_key(&app, &claims).await;
    assert_eq!(app.me(&within_leeway).await.status, 200);
    claims["exp"] = json!(now() - 40);
    let expired = sign_with_service_key(&app, &claims).await;
    let reply = app.me(&expired).await;
    reply.assert_problem(401, "invalid_token");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
}

#[tokio::test]
async fn a_token_without_the_at_jwt_type_is_refused() {
    let app = spawn_app().await;
    let reply = app.signed_up("ann@example.com").await;
    let claims = claims_of(&reply.access_token());
    let db = app.db.client().await;
    let row = db
        .query_one("SELECT kid, private_key FROM signing_keys", &[])
        .await
        .unwrap();
    let der: Vec<u8> = row.get(1);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(row.get(0));
    header.typ = Some("JWT".into());
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&der)).unwrap();
    app.me(&token).await.assert_problem(401, "invalid_token");
    assert_eq!(
        app.me(&reply.access_token()).await.status,
        200,
        "the genuine token still works"
    );
}

#[tokio::test]
async fn me_needs_a_live_bearer_token() {
    let app = spawn_app().await;
    let reply = app.signed_up("ann@example.com").await;
    let me = app.me(&reply.access_token()).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body, reply.body["user"]);

    let missing = app.get("/api/v1/me").await;
    missing.assert_problem(401, "invalid_token");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));

    let garbage = app.me("not.a.token").await;
    garbage.assert_problem(401, "invalid_token");
    assert_eq!(
        garbage.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );

    app.me(&reply.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
    let in_query = app
        .get(&format!("/api/v1/me?access_token={}", reply.access_token()))
        .await;
    in_query.assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn a_session_idle_too_long_ends_its_tokens() {
    let app = spawn_app().await;
    let reply = app.signed_up("ann@example.com").await;
    let db = app.db.client().await;
    db.execute(
        "UPDATE sessions SET last_used_at = now() - interval '8 days'",
        &[],
    )
    .await
    .unwrap();
    app.me(&reply.access_token())
        .await
        .assert_problem(401, "invalid_token");
    app.refresh(&reply.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn a_session_past_its_absolute_end_is_over() {
    let app = spawn_app().await;
    let reply = app.signed_up("ann@example.com").await;
    let db = app.db.client().await;
    db.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    app.me(&reply.access_token())
        .await
        .assert_problem(401, "invalid_token");
    app.refresh(&reply.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
}
