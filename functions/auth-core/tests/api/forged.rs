//! Forged and tampered tokens: each is refused with 401, and the genuine token still works.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{KeyInit, Mac};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> (Value, Value, String) {
    let pieces: Vec<&str> = token.split('.').collect();
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(pieces[0]).unwrap()).unwrap();
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(pieces[1]).unwrap()).unwrap();
    (header, claims, pieces[2].to_owned())
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = unsigned(header, claims);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// The service's public key in the forms an attacker would try as an HMAC secret.
fn public_key_forms(jwk: &Value) -> Vec<Vec<u8>> {
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
    // SubjectPublicKeyInfo for a P-256 key: a fixed prefix, then the uncompressed point.
    let mut der = hex_prefix();
    der.push(0x04);
    der.extend_from_slice(&x);
    der.extend_from_slice(&y);
    let body = STANDARD.encode(&der);
    let lines: Vec<String> = body
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    vec![
        pem.clone().into_bytes(),
        pem.trim_end().as_bytes().to_vec(),
        der,
        jwk.to_string().into_bytes(),
    ]
}

fn hex_prefix() -> Vec<u8> {
    let hex = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The service's own private key, read from the database, to sign tokens only it could sign.
async fn service_private_key(app: &TestApp) -> Vec<u8> {
    let db = app.db.client().await;
    db.query_one("SELECT private_key FROM signing_keys", &[])
        .await
        .unwrap()
        .get(0)
}

fn sign_es256(header: &Value, claims: &Value, pkcs8: &[u8]) -> String {
    let header: Header = serde_json::from_value(header.clone()).unwrap();
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(pkcs8)).unwrap()
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_refused_and_the_genuine_one_still_works() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    let genuine = registered.access_token();
    let (header, claims, signature) = parts(&genuine);
    let private_key = service_private_key(&app).await;
    let jwks = app.get("/.well-known/jwks.json").await.body;
    let jwk = jwks["keys"][0].clone();

    let mut forged: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, token: String| forged.push((name.to_owned(), token));

    for spelling in ["none", "None", "NONE", "nOnE"] {
        let mut h = header.clone();
        h["alg"] = json!(spelling);
        add(
            &format!("alg {spelling}, no signature"),
            format!("{}.", unsigned(&h, &claims)),
        );
        add(
            &format!("alg {spelling}, original signature"),
            format!("{}.{signature}", unsigned(&h, &claims)),
        );
    }
    let mut hs = header.clone();
    hs["alg"] = json!("HS256");
    for (i, secret) in public_key_forms(&jwk).iter().enumerate() {
        add(
            &format!("HS256 with the public key, form {i}"),
            hs256(&hs, &claims, secret),
        );
    }
    add("HS256 with an empty secret", hs256(&hs, &claims, b""));

    let attacker = auth_core::token::generate_key(auth_core::config::SigningAlg::Es256).unwrap();
    add(
        "signed by another key under our kid",
        sign_es256(&header, &claims, &attacker.private_pkcs8),
    );
    let mut with_jwk = header.clone();
    with_jwk["jwk"] = attacker.public_jwk.clone();
    add(
        "attacker key embedded as jwk",
        sign_es256(&with_jwk, &claims, &attacker.private_pkcs8),
    );
    let mut with_jwk_own = header.clone();
    with_jwk_own["kid"] = json!(attacker.kid);
    with_jwk_own["jwk"] = attacker.public_jwk.clone();
    add(
        "attacker kid and jwk",
        sign_es256(&with_jwk_own, &claims, &attacker.private_pkcs8),
    );
    for field in ["jku", "x5u"] {
        let mut h = header.clone();
        h[field] = json!("https://attacker.example/keys.json");
        add(
            &format!("{field} header, attacker key"),
            sign_es256(&h, &claims, &attacker.private_pkcs8),
        );
        add(
            &format!("{field} header, our key"),
            sign_es256(&h, &claims, &private_key),
        );
    }
    for hostile_kid in [
        "../../../../etc/passwd",
        "' OR '1'='1",
        "x'; DROP TABLE users; --",
        "",
    ] {
        let mut h = header.clone();
        h["kid"] = json!(hostile_kid);
        add(
            &format!("kid {hostile_kid:?}"),
            sign_es256(&h, &claims, &attacker.private_pkcs8),
        );
    }
    let mut no_kid = header.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    add(
        "no kid, our key",
        sign_es256(&no_kid, &claims, &private_key),
    );

    for (claim, value) in [
        ("sub", json!(uuid::Uuid::now_v7().to_string())),
        ("sid", json!(uuid::Uuid::now_v7().to_string())),
        ("exp", json!(claims["exp"].as_i64().unwrap() + 3600)),
        ("iat", json!(claims["iat"].as_i64().unwrap() - 10)),
        ("iss", json!("https://evil.example")),
        ("aud", json!("someone-else")),
        ("jti", json!("replayed")),
    ] {
        let mut tampered = claims.clone();
        tampered[claim] = value;
        add(
            &format!("{claim} tampered, original signature"),
            format!("{}.{signature}", unsigned(&header, &tampered)),
        );
    }
    for claim in ["sub", "sid", "exp", "iat", "iss", "aud", "jti"] {
        let mut missing = claims.clone();
        missing.as_object_mut().unwrap().remove(claim);
        add(
            &format!("{claim} missing, signed by our key"),
            sign_es256(&header, &missing, &private_key),
        );
    }
    for (claim, value) in [
        ("aud", json!("someone-else")),
        ("iss", json!("https://evil.example")),
    ] {
        let mut wrong = claims.clone();
        wrong[claim] = value;
        add(
            &format!("wrong {claim}, signed by our key"),
            sign_es256(&header, &wrong, &private_key),
        );
    }
    for typ in [Some("JWT"), Some("jwt+at"), None] {
        let mut h = header.clone();
        match typ {
            Some(typ) => h["typ"] = json!(typ),
            None => {
                h.as_object_mut().unwrap().remove("typ");
            }
        }
        add(
            &format!("typ {typ:?}, signed by our key"),
            sign_es256(&h, &claims, &private_key),
        );
    }
    let mut expired = claims.clone();
    expired["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 31);
    add(
        "expired beyond the leeway",
        sign_es256(&header, &expired, &private_key),
    );
    let mut future = claims.clone();
    future["iat"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() + 3600);
    future["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() + 4500);
    add(
        "issued in the future",
        sign_es256(&header, &future, &private_key),
    );

    let mut sig = URL_SAFE_NO_PAD.decode(&signature).unwrap();
    sig[10] ^= 0x01;
    let signing_input = unsigned(&header, &claims);
    let genuine_input = genuine.rsplit_once('.').unwrap().0.to_owned();
    add(
        "signature bit flipped",
        format!("{genuine_input}.{}", b64(&sig)),
    );
    add(
        "signature truncated",
        format!("{genuine_input}.{}", &signature[..signature.len() - 4]),
    );
    add("signature missing", format!("{genuine_input}."));
    add("two parts only", genuine_input.clone());
    add("four parts", format!("{genuine}.extra"));
    add(
        "re-encoded header and claims",
        format!("{signing_input}.{signature}x"),
    );
    add(
        "refresh token as a bearer token",
        registered.refresh_token(),
    );
    add("empty", String::new());

    assert!(forged.len() > 45);
    for (name, token) in &forged {
        let reply = app.me(token).await;
        assert_eq!(reply.status, 401, "{name} was accepted: {}", reply.text);
        assert_eq!(reply.code(), "invalid_token", "{name}");
        assert_eq!(
            app.me(&genuine).await.status,
            200,
            "the genuine token stopped working after {name}"
        );
    }
}

#[tokio::test]
async fn an_access_token_is_not_a_refresh_token() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    app.refresh(&registered.access_token())
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(app.refresh(&registered.refresh_token()).await.status, 200);
}

#[tokio::test]
async fn hs256_is_refused_even_with_an_hmac_key_the_attacker_might_guess() {
    // Belt and braces for algorithm confusion: a token that claims ES256 but carries an HMAC.
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    let (header, claims, _) = parts(&registered.access_token());
    let forged = hs256(&header, &claims, b"latchkey");
    app.me(&forged).await.assert_problem(401, "invalid_token");
}
