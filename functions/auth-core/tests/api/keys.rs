use std::sync::Arc;

use crate::helpers::{STRONG_PASSWORD, TestDatabase, spawn_app_on, spawn_app_with};

#[tokio::test]
async fn two_instances_starting_together_on_a_new_database_share_one_key() {
    let db = Arc::new(TestDatabase::create().await);
    let (first, second) =
        tokio::join!(spawn_app_on(db.clone(), &[]), spawn_app_on(db.clone(), &[]));
    let client = db.client().await;
    let keys: i64 = client
        .query_one("SELECT count(*) FROM signing_keys", &[])
        .await
        .unwrap()
        .get(0);
    let migrations: i64 = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 1);
    assert_eq!(
        migrations,
        i64::try_from(
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql"))
                .unwrap()
                .count()
        )
        .unwrap()
    );
    let first_jwks = first.get("/.well-known/jwks.json").await.body;
    assert_eq!(first_jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(first_jwks, second.get("/.well-known/jwks.json").await.body);
    // Tokens from one instance are accepted by the other.
    let registered = first.signed_up("ann@example.com").await;
    assert_eq!(second.me(&registered.access_token()).await.status, 200);
    let logged_in = second.login("ann@example.com", STRONG_PASSWORD).await;
    assert_eq!(first.me(&logged_in.access_token()).await.status, 200);
}

#[tokio::test]
async fn private_keys_are_encrypted_at_rest_when_a_key_encryption_key_is_set() {
    const KEK: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let app = spawn_app_with(&[("AUTH_KEY_ENCRYPTION_KEY", KEK)]).await;
    let registered = app.signed_up("ann@example.com").await;
    assert_eq!(app.me(&registered.access_token()).await.status, 200);
    let db = app.db.client().await;
    let row = db
        .query_one("SELECT kid, private_key, encrypted FROM signing_keys", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(2));
    let sealed: Vec<u8> = row.get(1);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(row.get(0));
    assert!(
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({}),
            &jsonwebtoken::EncodingKey::from_ec_der(&sealed)
        )
        .is_err(),
        "the stored bytes are not a usable key"
    );
    let secret_encrypted: bool = db
        .query_one("SELECT encrypted FROM service_secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert!(secret_encrypted);

    // An instance with another key-encryption key cannot use them and refuses to start.
    let mut settings = crate::helpers::base_settings(&app.db.url);
    settings.insert(
        "AUTH_KEY_ENCRYPTION_KEY".into(),
        "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=".into(),
    );
    let config = auth_core::Config::from_lookup(|name| settings.get(name).cloned()).unwrap();
    assert!(auth_core::Application::build(config).await.is_err());
}

#[tokio::test]
async fn eddsa_can_be_selected() {
    let app = spawn_app_with(&[("AUTH_SIGNING_ALG", "EdDSA")]).await;
    let registered = app.signed_up("ann@example.com").await;
    let header = jsonwebtoken::decode_header(registered.access_token()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(app.me(&registered.access_token()).await.status, 200);
    let jwks = app.get("/.well-known/jwks.json").await.body;
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
}
