//! `Idempotency-Key` on login and on the signed-in changes: a retry gets the first answer, the key
//! used for another request gets 422, keys expire after a day, and concurrent duplicates have one
//! effect.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Reply, STRONG_PASSWORD, TestApp, claim, spawn_app, spawn_app_with};

const NEW_PASSWORD: &str = "an entirely different strong passphrase";

impl TestApp {
    pub(crate) async fn keyed(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        key: &str,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("idempotency-key", key);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    async fn keyed_login(&self, email: &str, password: &str, key: &str) -> Reply {
        let body = json!({"email": email, "password": password});
        self.keyed(Method::POST, "/api/v1/auth/login", None, key, Some(&body))
            .await
    }

    async fn keyed_password_change(&self, token: &str, key: &str, new: &str) -> Reply {
        let body = json!({"current_password": STRONG_PASSWORD, "new_password": new});
        self.keyed(
            Method::POST,
            "/api/v1/me/password",
            Some(token),
            key,
            Some(&body),
        )
        .await
    }

    async fn event_count(&self, token: &str, kind: &str) -> usize {
        let events = self.get_with_token("/api/v1/me/events", token).await;
        events.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["type"] == kind)
            .count()
    }

    /// Moves every kept key a day and a minute into the past, as if the day had gone by.
    async fn age_idempotency_keys(&self) {
        self.db
            .client()
            .await
            .execute(
                "UPDATE idempotent_requests SET created_at = created_at - interval '1 day 1 minute'",
                &[],
            )
            .await
            .unwrap();
    }
}

#[track_caller]
pub(crate) fn assert_key_refused(reply: &Reply) {
    reply.assert_problem(422, "validation_failed");
    assert!(
        reply.body["errors"]["Idempotency-Key"].is_array(),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn a_login_retried_with_its_key_gets_the_same_session_and_refresh_token() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    let first = app
        .keyed_login("ann@example.com", STRONG_PASSWORD, "login-1")
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let retry = app
        .keyed_login("ann@example.com", STRONG_PASSWORD, "login-1")
        .await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.body["user"], first.body["user"]);
    assert_eq!(retry.refresh_token(), first.refresh_token());
    assert_eq!(
        claim(&retry.access_token(), "sid"),
        claim(&first.access_token(), "sid")
    );
    assert_eq!(app.me(&retry.access_token()).await.status, 200);
    // One login, one session beside the registration's, one event.
    let sessions = app
        .get_with_token("/api/v1/sessions", &retry.access_token())
        .await;
    assert_eq!(sessions.body["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.event_count(&retry.access_token(), "login_succeeded")
            .await,
        1
    );
    // The retry's refresh token is the session's one live token: it rotates as usual.
    assert_eq!(app.refresh(&retry.refresh_token()).await.status, 200);
}

#[tokio::test]
async fn a_login_key_refuses_another_account_and_a_session_that_moved_on() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    app.signed_up("bob@example.com").await;
    let first = app
        .keyed_login("ann@example.com", STRONG_PASSWORD, "login-2")
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    // The same key for another account is another request.
    assert_key_refused(
        &app.keyed_login("bob@example.com", STRONG_PASSWORD, "login-2")
            .await,
    );
    // A wrong password is what it always is: the key answers only a login that succeeds.
    app.keyed_login("ann@example.com", "not the password at all", "login-2")
        .await
        .assert_problem(401, "invalid_credentials");
    // Once the session's first refresh token is used, the first answer was not lost: the key
    // cannot hand out a spent token.
    assert_eq!(app.refresh(&first.refresh_token()).await.status, 200);
    assert_key_refused(
        &app.keyed_login("ann@example.com", STRONG_PASSWORD, "login-2")
            .await,
    );
}

#[tokio::test]
async fn a_login_key_expires_after_a_day() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    let first = app
        .keyed_login("ann@example.com", STRONG_PASSWORD, "login-3")
        .await;
    app.age_idempotency_keys().await;
    let later = app
        .keyed_login("ann@example.com", STRONG_PASSWORD, "login-3")
        .await;
    assert_eq!(later.status, 200, "{}", later.text);
    assert_ne!(
        claim(&later.access_token(), "sid"),
        claim(&first.access_token(), "sid")
    );
    assert_ne!(later.refresh_token(), first.refresh_token());
}

#[tokio::test]
async fn concurrent_logins_with_one_key_start_one_session() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    app.signed_up("ann@example.com").await;
    let replies = futures::future::join_all(
        (0..6).map(|_| app.keyed_login("ann@example.com", STRONG_PASSWORD, "login-4")),
    )
    .await;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let sids: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| claim(&r.access_token(), "sid"))
        .collect();
    let tokens: std::collections::HashSet<String> =
        replies.iter().map(Reply::refresh_token).collect();
    assert_eq!((sids.len(), tokens.len()), (1, 1));
    let sessions = app
        .get_with_token("/api/v1/sessions", &replies[0].access_token())
        .await;
    assert_eq!(sessions.body["sessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_password_change_retried_with_its_key_gets_204_again_and_changes_once() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let first = app
        .keyed_password_change(&token, "pw-1", NEW_PASSWORD)
        .await;
    assert_eq!(first.status, 204, "{}", first.text);
    // Without the key, the current password is now wrong; with it, the first answer.
    let retry = app
        .keyed_password_change(&token, "pw-1", NEW_PASSWORD)
        .await;
    assert_eq!(retry.status, 204, "{}", retry.text);
    assert_eq!(app.event_count(&token, "password_changed").await, 1);
    assert_eq!(app.login("ann@example.com", NEW_PASSWORD).await.status, 200);
    // The same key with another body is another request.
    assert_key_refused(
        &app.keyed_password_change(&token, "pw-1", "yet another strong passphrase here")
            .await,
    );
    // After a day the key is new again: the request runs, and the old password is wrong now.
    app.age_idempotency_keys().await;
    app.keyed_password_change(&token, "pw-1", NEW_PASSWORD)
        .await
        .assert_problem(403, "wrong_password");
}

#[tokio::test]
async fn concurrent_password_changes_with_one_key_change_it_once() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let replies = futures::future::join_all(
        (0..5).map(|_| app.keyed_password_change(&token, "pw-2", NEW_PASSWORD)),
    )
    .await;
    assert!(replies.iter().all(|r| r.status == 204), "{replies:?}");
    assert_eq!(app.event_count(&token, "password_changed").await, 1);
    assert_eq!(app.login("ann@example.com", NEW_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn an_account_deletion_retried_with_its_key_gets_204_after_the_account_is_gone() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let body = json!({"password": STRONG_PASSWORD});
    let delete = |key: &'static str, body: Value| {
        let (app, token) = (&app, token.clone());
        async move {
            app.keyed(Method::DELETE, "/api/v1/me", Some(&token), key, Some(&body))
                .await
        }
    };
    assert_eq!(delete("del-1", body.clone()).await.status, 204);
    let retry = delete("del-1", body.clone()).await;
    assert_eq!(retry.status, 204, "{}", retry.text);
    assert_key_refused(&delete("del-1", json!({"password": "another password"})).await);
    // Another key is another request, by a session that has ended.
    delete("del-2", body)
        .await
        .assert_problem(401, "invalid_token");
    app.login("ann@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
}

#[tokio::test]
async fn concurrent_account_deletions_with_one_key_all_get_204() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let body = json!({"password": STRONG_PASSWORD});
    let replies = futures::future::join_all((0..5).map(|_| {
        app.keyed(
            Method::DELETE,
            "/api/v1/me",
            Some(&token),
            "del-3",
            Some(&body),
        )
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 204), "{replies:?}");
    app.login("ann@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
}

#[tokio::test]
async fn ending_a_session_retried_with_its_key_gets_204_not_404() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let other = app.login("ann@example.com", STRONG_PASSWORD).await;
    let third = app.login("ann@example.com", STRONG_PASSWORD).await;
    let path = |reply: &Reply| format!("/api/v1/sessions/{}", claim(&reply.access_token(), "sid"));
    let end = |path: String| {
        let (app, token) = (&app, token.clone());
        async move {
            app.keyed(Method::DELETE, &path, Some(&token), "end-1", None)
                .await
        }
    };
    assert_eq!(end(path(&other)).await.status, 204);
    let retry = end(path(&other)).await;
    assert_eq!(retry.status, 204, "{}", retry.text);
    assert_eq!(app.event_count(&token, "session_revoked").await, 1);
    // The key for another session is another request; that session lives on.
    assert_key_refused(&end(path(&third)).await);
    assert_eq!(app.me(&third.access_token()).await.status, 200);
    // A 404 is not kept: the key still answers nothing else.
    let missing = format!("/api/v1/sessions/{}", uuid::Uuid::now_v7());
    app.keyed(Method::DELETE, &missing, Some(&token), "end-2", None)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(
        app.keyed(Method::DELETE, &path(&third), Some(&token), "end-2", None)
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn ending_the_other_sessions_retried_with_its_key_spares_sessions_started_since() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let before = app.login("ann@example.com", STRONG_PASSWORD).await;
    let end_others = || {
        app.keyed(
            Method::DELETE,
            "/api/v1/sessions",
            Some(&token),
            "all-1",
            None,
        )
    };
    assert_eq!(end_others().await.status, 204);
    assert_eq!(app.me(&before.access_token()).await.status, 401);
    let since = app.login("ann@example.com", STRONG_PASSWORD).await;
    assert_eq!(end_others().await.status, 204);
    assert_eq!(app.me(&since.access_token()).await.status, 200);
    assert_eq!(app.event_count(&token, "session_revoked").await, 1);
    // Past its day the key is new: the request runs again.
    app.age_idempotency_keys().await;
    assert_eq!(end_others().await.status, 204);
    assert_eq!(app.me(&since.access_token()).await.status, 401);
}

#[tokio::test]
async fn a_key_is_scoped_to_its_session_and_endpoint() {
    let app = spawn_app().await;
    let ann = app.signed_up("ann@example.com").await.access_token();
    let bob = app.signed_up("bob@example.com").await.access_token();
    let app = &app;
    let end_others = |token: String| async move {
        app.keyed(
            Method::DELETE,
            "/api/v1/sessions",
            Some(&token),
            "shared",
            None,
        )
        .await
    };
    assert_eq!(end_others(ann.clone()).await.status, 204);
    // Bob's session never used the key: his request is new, not a 422 for Ann's.
    assert_eq!(end_others(bob).await.status, 204);
    let changed = app
        .keyed_password_change(&ann, "shared", NEW_PASSWORD)
        .await;
    assert_eq!(changed.status, 204, "{}", changed.text);
}

#[tokio::test]
async fn a_malformed_key_is_a_bad_request_everywhere() {
    let app = spawn_app().await;
    let signed_up = app.signed_up("ann@example.com").await;
    let token = signed_up.access_token();
    let bad = "k".repeat(256);
    let cases: [(Method, &str, Option<&str>, Option<Value>); 5] = [
        (
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ann@example.com", "password": STRONG_PASSWORD})),
        ),
        (
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": signed_up.refresh_token()})),
        ),
        (
            Method::POST,
            "/api/v1/auth/logout",
            Some(token.as_str()),
            None,
        ),
        (
            Method::POST,
            "/api/v1/me/password",
            Some(token.as_str()),
            Some(json!({"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD})),
        ),
        (
            Method::DELETE,
            "/api/v1/sessions",
            Some(token.as_str()),
            None,
        ),
    ];
    for (method, path, token, body) in cases {
        app.keyed(method, path, token, &bad, body.as_ref())
            .await
            .assert_problem(400, "invalid_request");
    }
    // Nothing happened: the session is alive and the password unchanged.
    assert_eq!(app.me(&token).await.status, 200);
    assert_eq!(
        app.login("ann@example.com", STRONG_PASSWORD).await.status,
        200
    );
}

#[tokio::test]
async fn the_kept_keys_hold_neither_the_key_nor_the_password() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let key = "a-key-that-must-not-be-stored";
    assert_eq!(
        app.keyed_password_change(&token, key, NEW_PASSWORD)
            .await
            .status,
        204
    );
    assert_eq!(
        app.keyed_login("ann@example.com", NEW_PASSWORD, key)
            .await
            .status,
        200
    );
    let rows = app
        .db
        .client()
        .await
        .query("SELECT key_hash, fingerprint FROM idempotent_requests", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        for column in 0..2 {
            let stored: Vec<u8> = row.get(column);
            assert_eq!(stored.len(), 32);
            for secret in [key, STRONG_PASSWORD, NEW_PASSWORD] {
                assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()));
            }
        }
    }
}

#[tokio::test]
async fn an_account_deletion_key_expires_after_a_day() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let body = json!({"password": STRONG_PASSWORD});
    let delete = || {
        app.keyed(
            Method::DELETE,
            "/api/v1/me",
            Some(&token),
            "del-4",
            Some(&body),
        )
    };
    assert_eq!(delete().await.status, 204);
    app.age_idempotency_keys().await;
    // A new request now, by a session that ended with the account.
    delete().await.assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn ending_a_session_with_one_key_concurrently_ends_it_once_and_the_key_expires() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let other = app.login("ann@example.com", STRONG_PASSWORD).await;
    let path = format!("/api/v1/sessions/{}", claim(&other.access_token(), "sid"));
    let end = || app.keyed(Method::DELETE, &path, Some(&token), "end-3", None);
    let replies = futures::future::join_all((0..5).map(|_| end())).await;
    assert!(replies.iter().all(|r| r.status == 204), "{replies:?}");
    assert_eq!(app.event_count(&token, "session_revoked").await, 1);
    assert_eq!(app.me(&other.access_token()).await.status, 401);
    app.age_idempotency_keys().await;
    end().await.assert_problem(404, "not_found");
}

#[tokio::test]
async fn ending_the_other_sessions_with_one_key_concurrently_ends_them_once() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let other = app.login("ann@example.com", STRONG_PASSWORD).await;
    let replies = futures::future::join_all((0..5).map(|_| {
        app.keyed(
            Method::DELETE,
            "/api/v1/sessions",
            Some(&token),
            "all-2",
            None,
        )
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 204), "{replies:?}");
    assert_eq!(app.event_count(&token, "session_revoked").await, 1);
    assert_eq!(app.me(&other.access_token()).await.status, 401);
    assert_eq!(app.me(&token).await.status, 200);
}

#[tokio::test]
async fn an_allowed_origin_may_send_the_key() {
    let app = spawn_app_with(&[("AUTH_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let preflight = Reply::from(
        app.http
            .request(Method::OPTIONS, app.url("/api/v1/me/password"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed.contains("idempotency-key"), "{allowed}");
}
