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

#[tokio::test]
async fn rotation_publishes_the_next_key_first_and_keeps_the_retired_one_while_its_tokens_live() {
    let first = crate::helpers::spawn_app().await;
    let others = [
        spawn_app_on(first.db.clone(), &[]).await,
        spawn_app_on(first.db.clone(), &[]).await,
    ];
    let registered = first.signed_up("ann@example.com").await;
    let old_kid = jsonwebtoken::decode_header(registered.access_token())
        .unwrap()
        .kid
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::DAY;

    // Every instance notices the end of the period at once: exactly one next key appears.
    let near_the_end = now + day * 29 + time::Duration::HOUR;
    let (a, b, c) = tokio::join!(
        first.auth.maintain_keys(near_the_end),
        others[0].auth.maintain_keys(near_the_end),
        others[1].auth.maintain_keys(near_the_end)
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let db = first.db.client().await;
    let keys: i64 = db
        .query_one("SELECT count(*) FROM signing_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 2);

    // Published before it signs: today's tokens still come from the old key.
    let kids = |jwks: serde_json::Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let published = kids(first.get("/.well-known/jwks.json").await.body);
    assert_eq!(published.len(), 2);
    assert!(published.contains(&old_kid));
    let new_kid = published
        .iter()
        .find(|kid| **kid != old_kid)
        .unwrap()
        .clone();
    let fresh = first.login("ann@example.com", STRONG_PASSWORD).await;
    assert_eq!(
        jsonwebtoken::decode_header(fresh.access_token())
            .unwrap()
            .kid
            .unwrap(),
        old_kid
    );

    // Once the new key signs, the old one stays published for the life of its last tokens.
    let switched: time::OffsetDateTime = db
        .query_one("SELECT max(signs_from) FROM signing_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        switched >= near_the_end + day - time::Duration::SECOND,
        "published at least a day before it signs"
    );
    let jwks_at = |at| first.auth.jwks(at);
    assert_eq!(
        kids(
            jwks_at(switched + time::Duration::minutes(10))
                .await
                .unwrap()
        )
        .len(),
        2
    );
    let later = kids(
        jwks_at(switched + time::Duration::minutes(16))
            .await
            .unwrap(),
    );
    assert_eq!(later, vec![new_kid]);
    // Running maintenance again within the period adds nothing.
    first
        .auth
        .maintain_keys(near_the_end + time::Duration::HOUR)
        .await
        .unwrap();
    let keys: i64 = db
        .query_one("SELECT count(*) FROM signing_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 2);
}

#[tokio::test]
async fn a_key_made_by_another_instance_is_picked_up_for_verification() {
    let first = crate::helpers::spawn_app().await;
    let second = spawn_app_on(first.db.clone(), &[]).await;
    // The second instance rotates (as if its clock said the period was over) and signs with the
    // new key; the first has never seen that key and must load it on demand.
    let future = time::OffsetDateTime::now_utc() + time::Duration::DAY * 31;
    second
        .auth
        .maintain_keys(future - time::Duration::DAY * 2)
        .await
        .unwrap();
    let db = first.db.client().await;
    db.execute(
        "UPDATE signing_keys SET signs_from = now() - interval '1 second' WHERE signs_from > now()",
        &[],
    )
    .await
    .unwrap();
    second
        .auth
        .maintain_keys(time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    let registered = second.signed_up("ann@example.com").await;
    let kid = jsonwebtoken::decode_header(registered.access_token())
        .unwrap()
        .kid
        .unwrap();
    let newest: String = db
        .query_one(
            "SELECT kid FROM signing_keys ORDER BY signs_from DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kid, newest);
    assert_eq!(first.me(&registered.access_token()).await.status, 200);
}
