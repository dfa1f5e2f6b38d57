use crate::helpers::{STRONG_PASSWORD, spawn_app, spawn_app_on};

#[tokio::test]
async fn login_returns_a_new_session() {
    let app = spawn_app().await;
    let registered = app.signed_up("ann@example.com").await;
    let reply = app.login("ANN@example.com", STRONG_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.body["user"], registered.body["user"]);
    assert_ne!(reply.refresh_token(), registered.refresh_token());
    assert_eq!(reply.refresh_cookie(), Some(reply.refresh_token()));
    assert_eq!(app.me(&reply.access_token()).await.status, 200);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    let wrong_password = app
        .login("ann@example.com", "not the password at all")
        .await;
    let unknown_email = app
        .login("bob@example.com", "not the password at all")
        .await;
    let malformed_email = app.login("bob", "not the password at all").await;
    wrong_password.assert_problem(401, "invalid_credentials");
    for other in [&unknown_email, &malformed_email] {
        assert_eq!(other.status, wrong_password.status);
        assert_eq!(other.text, wrong_password.text);
        assert_eq!(
            other.header("www-authenticate"),
            wrong_password.header("www-authenticate")
        );
        assert!(other.set_cookies().is_empty());
    }
}

#[tokio::test]
async fn an_old_hash_is_upgraded_on_the_next_login() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    let stronger = spawn_app_on(app.db.clone(), &[("AUTH_PBKDF2_ITERATIONS", "2000")]).await;
    assert_eq!(
        stronger
            .login("ann@example.com", STRONG_PASSWORD)
            .await
            .status,
        200
    );
    let db = app.db.client().await;
    let stored: String = db
        .query_one("SELECT password_hash FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("$pbkdf2-sha256$i=2000,"), "{stored}");
    assert_eq!(
        app.login("ann@example.com", STRONG_PASSWORD).await.status,
        200,
        "the upgraded hash still verifies"
    );
}

#[tokio::test]
async fn logins_beyond_the_hashing_pool_and_queue_are_refused_as_overloaded() {
    // One hashing slot and no waiting room; the test itself holds the slot, so which request
    // finds it taken does not depend on how the machine schedules threads.
    let app = crate::helpers::spawn_app_with(&[
        ("AUTH_MAX_CONCURRENT_HASHES", "1"),
        ("AUTH_HASH_QUEUE", "0"),
    ])
    .await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let slot = app.hold_hashing_slot().await;
    for _ in 0..3 {
        let reply = app.login("ann@example.com", STRONG_PASSWORD).await;
        reply.assert_problem(503, "overloaded");
        assert!(
            reply
                .header("retry-after")
                .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)),
            "{reply:?}"
        );
    }
    // Reads that need no hashing keep being answered while the pool is full.
    for _ in 0..10 {
        assert_eq!(app.me(&token).await.status, 200);
    }
    slot.release().await;
    assert_eq!(
        app.login("ann@example.com", STRONG_PASSWORD).await.status,
        200
    );
}
