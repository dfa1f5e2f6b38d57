//! The account-security issue's holes, each closed and shown over HTTP against PostgreSQL:
//! re-authentication counts as a login, credential changes win races, no lock-out from afar,
//! IPv6 networks, the browser never holding a refresh token, retired keys, bounded growth, and
//! the smaller ones (cookie shadowing, look-alike emails, error details, unknown addresses).

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Reply, STRONG_PASSWORD, TestApp, TestDatabase, claim, spawn_app_on, spawn_app_with,
};
use crate::limits::retry_after;

const OWN_ORIGIN: &str = "http://localhost:8080";
const NEW_PASSWORD: &str = "another entirely different passphrase";

impl TestApp {
    async fn post_with_headers(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.http.post(self.url(path)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    async fn change_password(&self, token: &str, current: &str, new: &str) -> Reply {
        self.send_json_with_token(
            Method::POST,
            "/api/v1/me/password",
            token,
            &json!({"current_password": current, "new_password": new}),
        )
        .await
    }

    /// How many of the account's events are of `kind`.
    async fn events_of(&self, token: &str, kind: &str) -> usize {
        self.get_with_token("/api/v1/me/events", token).await.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["type"] == kind)
            .count()
    }
}

// 1. Re-authentication is a password check like a login.

#[tokio::test]
async fn wrong_current_passwords_count_in_the_back_off_and_are_recorded() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    let token = app.signed_up("ann@example.com").await.access_token();
    for _ in 0..3 {
        app.change_password(&token, "not my password", NEW_PASSWORD)
            .await
            .assert_problem(403, "wrong_password");
    }
    for _ in 0..2 {
        app.send_json_with_token(
            Method::DELETE,
            "/api/v1/me",
            &token,
            &json!({"password": "not my password"}),
        )
        .await
        .assert_problem(403, "wrong_password");
    }
    // Five failures in all: the sixth check of any kind waits, the right password too.
    let blocked = app
        .change_password(&token, STRONG_PASSWORD, NEW_PASSWORD)
        .await;
    blocked.assert_problem(429, "too_many_requests");
    assert!(retry_after(&blocked) >= 1);
    app.login("ann@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(429, "too_many_requests");
    assert_eq!(
        app.events_of(&token, "login_failed").await,
        5,
        "every failed re-authentication is an event"
    );
}

#[tokio::test]
async fn re_authentication_counts_in_the_per_network_limit() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "3")]).await;
    let token = app.signed_up("ann@example.com").await.access_token();
    app.login("ann@example.com", STRONG_PASSWORD).await;
    app.change_password(&token, "wrong guess one", NEW_PASSWORD)
        .await
        .assert_problem(403, "wrong_password");
    app.change_password(&token, "wrong guess two", NEW_PASSWORD)
        .await
        .assert_problem(403, "wrong_password");
    app.change_password(&token, "wrong guess three", NEW_PASSWORD)
        .await
        .assert_problem(429, "too_many_requests");
}

#[tokio::test]
async fn a_login_refused_as_overloaded_is_not_charged_as_a_failure() {
    let app = spawn_app_with(&[
        ("AUTH_IP_LOGINS_PER_MINUTE", "0"),
        ("AUTH_MAX_CONCURRENT_HASHES", "1"),
        ("AUTH_HASH_QUEUE", "0"),
    ])
    .await;
    app.signed_up("ann@example.com").await;
    let held = app.hold_hashing_slot().await;
    for _ in 0..10 {
        app.login("ann@example.com", "a flood of guesses")
            .await
            .assert_problem(503, "overloaded");
    }
    held.release().await;
    let reply = app.login("ann@example.com", STRONG_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn correct_logins_in_parallel_after_a_few_typos_all_succeed() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    app.signed_up("ann@example.com").await;
    for _ in 0..4 {
        app.login("ann@example.com", "typo in the passphrase")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let logins = (0..8).map(|_| app.login("ann@example.com", STRONG_PASSWORD));
    let replies = futures::future::join_all(logins).await;
    assert!(
        replies.iter().all(|reply| reply.status == 200),
        "{replies:?}"
    );
}

// 2. Credential changes win races.

#[tokio::test]
async fn no_login_racing_a_password_change_outlives_it() {
    for round in 0..4 {
        let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
        let token = app.signed_up("ann@example.com").await.access_token();
        let logins = (0..10).map(|_| app.login("ann@example.com", STRONG_PASSWORD));
        let change = async {
            // Let the first logins reach their hash before the change starts.
            tokio::time::sleep(std::time::Duration::from_millis(round * 3)).await;
            app.change_password(&token, STRONG_PASSWORD, NEW_PASSWORD)
                .await
        };
        let (replies, changed) = tokio::join!(futures::future::join_all(logins), change);
        assert_eq!(changed.status, 204, "{}", changed.text);
        for reply in replies.iter().filter(|reply| reply.status == 200) {
            assert_eq!(
                app.me(&reply.access_token()).await.status,
                401,
                "round {round}: a session started with the old password is alive"
            );
            app.refresh(&reply.refresh_token())
                .await
                .assert_problem(401, "invalid_token");
        }
        assert!(
            replies
                .iter()
                .all(|reply| reply.status == 200 || reply.status == 401),
            "{replies:?}"
        );
        assert_eq!(app.me(&token).await.status, 200, "the changer stays");
    }
}

#[tokio::test]
async fn no_refresh_racing_a_password_change_outlives_it() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    let token = app.signed_up("ann@example.com").await.access_token();
    let others: Vec<Reply> =
        futures::future::join_all((0..6).map(|_| app.login("ann@example.com", STRONG_PASSWORD)))
            .await;
    let tokens: Vec<String> = others.iter().map(Reply::refresh_token).collect();
    let refreshes = tokens.iter().map(|token| app.refresh(token));
    let (refreshed, changed) = tokio::join!(
        futures::future::join_all(refreshes),
        app.change_password(&token, STRONG_PASSWORD, NEW_PASSWORD)
    );
    assert_eq!(changed.status, 204);
    for reply in refreshed.iter().filter(|reply| reply.status == 200) {
        assert_eq!(app.me(&reply.access_token()).await.status, 401);
        app.refresh(&reply.refresh_token())
            .await
            .assert_problem(401, "invalid_token");
    }
}

// 3. Nobody locks the owner out from elsewhere.

#[tokio::test]
async fn a_stranger_elsewhere_cannot_lock_the_owner_out() {
    let settings = [
        ("AUTH_IP_LOGINS_PER_MINUTE", "0"),
        ("AUTH_TRUSTED_PROXIES", "127.0.0.1/32"),
    ];
    let first = spawn_app_with(&settings).await;
    let second = spawn_app_on(first.db.clone(), &settings).await;
    first.signed_up("ann@example.com").await;
    for attempt in 0..10 {
        let app = if attempt % 2 == 0 { &first } else { &second };
        let reply = app
            .login_as_client("ann@example.com", "guess", Some("203.0.113.7"))
            .await;
        assert!(reply.status == 401 || reply.status == 429, "{reply:?}");
    }
    second
        .login_as_client("ann@example.com", STRONG_PASSWORD, Some("203.0.113.7"))
        .await
        .assert_problem(429, "too_many_requests");
    let owner = first
        .login_as_client("ann@example.com", STRONG_PASSWORD, Some("198.51.100.9"))
        .await;
    assert_eq!(owner.status, 200, "{}", owner.text);
}

#[tokio::test]
async fn across_every_network_an_email_backs_off_after_the_account_ceiling() {
    let settings = [
        ("AUTH_IP_LOGINS_PER_MINUTE", "0"),
        ("AUTH_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AUTH_LOGIN_ACCOUNT_FAILURES", "8"),
    ];
    let first = spawn_app_with(&settings).await;
    let second = spawn_app_on(first.db.clone(), &settings).await;
    first.signed_up("ann@example.com").await;
    // Eight networks, one failure each: none reaches its own back-off.
    for network in 1..=8 {
        let app = if network % 2 == 0 { &first } else { &second };
        app.login_as_client(
            "ann@example.com",
            "guess",
            Some(&format!("203.0.113.{network}")),
        )
        .await
        .assert_problem(401, "invalid_credentials");
    }
    let blocked = first
        .login_as_client("ann@example.com", STRONG_PASSWORD, Some("198.51.100.9"))
        .await;
    blocked.assert_problem(429, "too_many_requests");
    assert_eq!(retry_after(&blocked), 1, "2^(8-8) seconds");
}

// 4. IPv6 networks and IPv4-mapped addresses.

#[tokio::test]
async fn the_addresses_of_one_ipv6_slash_64_share_one_budget() {
    let settings = [
        ("AUTH_IP_LOGINS_PER_MINUTE", "3"),
        ("AUTH_TRUSTED_PROXIES", "127.0.0.1/32"),
    ];
    let app = spawn_app_with(&settings).await;
    let other = spawn_app_on(app.db.clone(), &settings).await;
    for (i, address) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"]
        .into_iter()
        .enumerate()
    {
        let instance = if i % 2 == 0 { &app } else { &other };
        instance
            .login_as_client(&format!("u{i}@example.com"), "guess", Some(address))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    other
        .login_as_client("u9@example.com", "guess", Some("2001:db8:1:2:abcd::1"))
        .await
        .assert_problem(429, "too_many_requests");
    app.login_as_client("u9@example.com", "guess", Some("2001:db8:1:3::1"))
        .await
        .assert_problem(401, "invalid_credentials");
}

#[tokio::test]
async fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
    let app = spawn_app_with(&[
        ("AUTH_IP_LOGINS_PER_MINUTE", "0"),
        ("AUTH_TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    app.signed_up("ann@example.com").await;
    for address in [
        "::ffff:192.0.2.5",
        "192.0.2.5",
        "::ffff:192.0.2.5",
        "192.0.2.5",
        "::ffff:c000:205",
    ] {
        app.login_as_client("ann@example.com", "guess", Some(address))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    app.login_as_client("ann@example.com", STRONG_PASSWORD, Some("192.0.2.5"))
        .await
        .assert_problem(429, "too_many_requests");
    // Five failures from one IPv6 /64 spread over its addresses back off that network.
    for host in 1..=5 {
        app.login_as_client(
            "ann@example.com",
            "guess",
            Some(&format!("2001:db8:9:9::{host}")),
        )
        .await
        .assert_problem(401, "invalid_credentials");
    }
    app.login_as_client("ann@example.com", STRONG_PASSWORD, Some("2001:db8:9:9::77"))
        .await
        .assert_problem(429, "too_many_requests");
    let elsewhere = app
        .login_as_client("ann@example.com", STRONG_PASSWORD, Some("2001:db8:9:a::1"))
        .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text);
}

// 5. Browsers never see the refresh token; logout ends every session it is shown.

#[tokio::test]
async fn a_request_with_an_origin_gets_the_refresh_token_only_in_the_cookie() {
    let app = spawn_app_with(&[]).await;
    let origin = [("origin", OWN_ORIGIN)];
    let credentials = json!({"email": "ann@example.com", "password": STRONG_PASSWORD});
    for path in ["/api/v1/auth/register", "/api/v1/auth/login"] {
        let reply = app.post_with_headers(path, &credentials, &origin).await;
        assert!(reply.status == 200 || reply.status == 201, "{}", reply.text);
        assert!(
            reply.body.get("refresh_token").is_none(),
            "{path}: {}",
            reply.text
        );
        assert!(reply.refresh_cookie().is_some(), "{path}");
        assert!(reply.body["access_token"].is_string());
    }
    let login = app
        .post_with_headers("/api/v1/auth/login", &credentials, &origin)
        .await;
    let cookie = format!("refresh_token={}", login.refresh_cookie().unwrap());
    let refreshed = app
        .post_with_headers(
            "/api/v1/auth/refresh",
            &json!({}),
            &[("origin", OWN_ORIGIN), ("cookie", &cookie)],
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert!(
        refreshed.body.get("refresh_token").is_none(),
        "{}",
        refreshed.text
    );
    assert!(refreshed.refresh_cookie().is_some());
    // A native client (no Origin) still gets it in the body.
    let native = app.login("ann@example.com", STRONG_PASSWORD).await;
    assert!(native.body["refresh_token"].is_string());
}

#[tokio::test]
async fn logout_ends_every_session_it_is_shown_and_a_junk_body_token_saves_none() {
    let app = spawn_app_with(&[("AUTH_IP_LOGINS_PER_MINUTE", "0")]).await;
    app.signed_up("ann@example.com").await;
    let by_cookie = app.login("ann@example.com", STRONG_PASSWORD).await;
    let by_body = app.login("ann@example.com", STRONG_PASSWORD).await;
    let by_bearer = app.login("ann@example.com", STRONG_PASSWORD).await;
    let bystander = app.login("ann@example.com", STRONG_PASSWORD).await;

    // The attack: a junk token in the body and the cookie clears the cookie; its session ends.
    let cookie = format!("refresh_token={}", by_cookie.refresh_token());
    let junk = app
        .post_with_headers(
            "/api/v1/auth/logout",
            &json!({"refresh_token": "x".repeat(43)}),
            &[("origin", OWN_ORIGIN), ("cookie", &cookie)],
        )
        .await;
    assert_eq!(junk.status, 204);
    app.refresh(&by_cookie.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(app.me(&by_cookie.access_token()).await.status, 401);

    // All three at once: bearer, body and cookie name three sessions.
    let again = app.login("ann@example.com", STRONG_PASSWORD).await;
    let cookie = format!("refresh_token={}", again.refresh_token());
    let bearer = format!("Bearer {}", by_bearer.access_token());
    let all = app
        .post_with_headers(
            "/api/v1/auth/logout",
            &json!({"refresh_token": by_body.refresh_token()}),
            &[("cookie", &cookie), ("authorization", &bearer)],
        )
        .await;
    assert_eq!(all.status, 204);
    for ended in [&again, &by_body, &by_bearer] {
        assert_eq!(app.me(&ended.access_token()).await.status, 401);
    }
    assert_eq!(app.me(&bystander.access_token()).await.status, 200);
}

// 6. Retired keys verify nothing, and lose their private half.

#[tokio::test]
async fn a_token_signed_with_a_retired_key_is_refused_even_when_minted_from_a_backup() {
    let app = spawn_app_with(&[]).await;
    let ann = app.signed_up("ann@example.com").await;
    let old_kid = serde_json::from_slice::<Value>(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ann.access_token().split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let db = app.db.client().await;
    // A backup of the key as it is stored today (the tests set no key-encryption key).
    let backup: Vec<u8> = db
        .query_one(
            "SELECT private_key FROM signing_keys WHERE kid = $1",
            &[&old_kid],
        )
        .await
        .unwrap()
        .get(0);

    // Rotation is due; the successor has signed for an hour, longer than any token lives.
    db.batch_execute(
        "UPDATE signing_keys SET signs_from = signs_from - interval '40 days', \
         created_at = created_at - interval '40 days'",
    )
    .await
    .unwrap();
    app.auth
        .maintain_keys(time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    db.execute(
        "UPDATE signing_keys SET signs_from = now() - interval '1 hour' WHERE kid <> $1",
        &[&old_kid],
    )
    .await
    .unwrap();
    app.auth
        .maintain_keys(time::OffsetDateTime::now_utc())
        .await
        .unwrap();

    let wiped: Option<Vec<u8>> = db
        .query_one(
            "SELECT private_key FROM signing_keys WHERE kid = $1",
            &[&old_kid],
        )
        .await
        .unwrap()
        .get(0);
    assert!(wiped.is_none(), "the retired key's private half is wiped");
    let jwks = app.get("/.well-known/jwks.json").await.body;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|key| key["kid"] != old_kid.as_str()),
        "{jwks}"
    );
    // A fresh token minted with the backup for a live session is refused.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(old_kid.clone());
    let claims = json!({
        "iss": "http://localhost:8080", "aud": "latchkey",
        "sub": claim(&ann.access_token(), "sub"), "sid": claim(&ann.access_token(), "sid"),
        "jti": "forged", "iat": now, "exp": now + 600,
    });
    let minted = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&backup),
    )
    .unwrap();
    let refused = app.me(&minted).await;
    refused.assert_problem(401, "invalid_token");
    // The session itself is fine: a refresh gets a token from the current key.
    let refreshed = app.refresh(&ann.refresh_token()).await;
    assert_eq!(app.me(&refreshed.access_token()).await.status, 200);
}

// 7. Bounded growth.

#[tokio::test]
async fn live_sessions_are_capped_per_user_and_the_oldest_end() {
    let app = spawn_app_with(&[
        ("AUTH_IP_LOGINS_PER_MINUTE", "0"),
        ("AUTH_MAX_SESSIONS_PER_USER", "3"),
    ])
    .await;
    let first = app.signed_up("ann@example.com").await;
    let mut logins = Vec::new();
    for _ in 0..4 {
        logins.push(app.login("ann@example.com", STRONG_PASSWORD).await);
    }
    let newest = logins.last().unwrap().access_token();
    let listed = app.get_with_token("/api/v1/sessions", &newest).await;
    assert_eq!(listed.body["sessions"].as_array().unwrap().len(), 3);
    for ended in [&first, &logins[0]] {
        assert_eq!(app.me(&ended.access_token()).await.status, 401);
        app.refresh(&ended.refresh_token())
            .await
            .assert_problem(401, "invalid_token");
    }
    for kept in &logins[1..] {
        assert_eq!(app.me(&kept.access_token()).await.status, 200);
    }
    assert_eq!(
        app.events_of(&newest, "session_revoked").await,
        2,
        "each session ended by the cap is an event"
    );
}

#[tokio::test]
async fn a_session_keeps_a_bounded_refresh_history_and_still_detects_reuse() {
    let app = spawn_app_with(&[("AUTH_REFRESH_REUSE_GRACE_SECS", "0")]).await;
    let mut current = app.signed_up("ann@example.com").await;
    let mut previous = current.refresh_token();
    for _ in 0..40 {
        previous = current.refresh_token();
        current = app.refresh(&previous).await;
        assert_eq!(current.status, 200, "{}", current.text);
    }
    let session_id = claim(&current.access_token(), "sid");
    let rows: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM refresh_tokens WHERE session_id = $1::text::uuid",
            &[&session_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(rows <= 17, "{rows} refresh-token rows for one session");
    // The token one step back is still known: presenting it is a reuse that ends the session.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.refresh(&previous)
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(app.me(&current.access_token()).await.status, 401);
}

// 8. The smaller ones.

#[tokio::test]
async fn the_reuse_grace_is_measured_on_the_databases_clock() {
    let app = spawn_app_with(&[]).await;
    let token = app.signed_up("ann@example.com").await.refresh_token();
    let client = auth_core::service::ClientInfo::default();
    let now = time::OffsetDateTime::now_utc();
    let first = app.auth.refresh(&token, &client, now).await.unwrap();
    // An instance whose clock runs an hour ahead presents the same token again at once: by the
    // database's clock that is within the grace, so it gets the same successor, not a reuse.
    let again = app
        .auth
        .refresh(&token, &client, now + time::Duration::HOUR)
        .await
        .unwrap();
    assert_eq!(again.refresh_token, first.refresh_token);
}

#[tokio::test]
async fn a_second_refresh_cookie_planted_for_a_wider_path_is_refused_not_chosen() {
    let app = spawn_app_with(&[]).await;
    let ann = app.signed_up("ann@example.com").await;
    let mallory = app.signed_up("mallory@example.com").await;
    let shadowed = format!(
        "refresh_token={}; refresh_token={}",
        ann.refresh_token(),
        mallory.refresh_token()
    );
    app.post_with_headers(
        "/api/v1/auth/refresh",
        &json!({}),
        &[("origin", OWN_ORIGIN), ("cookie", &shadowed)],
    )
    .await
    .assert_problem(401, "invalid_token");
    let twice = format!(
        "refresh_token={}; refresh_token={}",
        ann.refresh_token(),
        ann.refresh_token()
    );
    let same = app
        .post_with_headers(
            "/api/v1/auth/refresh",
            &json!({}),
            &[("origin", OWN_ORIGIN), ("cookie", &twice)],
        )
        .await;
    assert_eq!(same.status, 200, "{}", same.text);

    // Signing out with both ends both sessions: the cookie is cleared only with its session.
    let ann_again = app.login("ann@example.com", STRONG_PASSWORD).await;
    let shadowed = format!(
        "refresh_token={}; refresh_token={}",
        ann_again.refresh_token(),
        mallory.refresh_token()
    );
    let out = app
        .post_with_headers(
            "/api/v1/auth/logout",
            &json!({}),
            &[("origin", OWN_ORIGIN), ("cookie", &shadowed)],
        )
        .await;
    assert_eq!(out.status, 204);
    assert_eq!(app.me(&ann_again.access_token()).await.status, 401);
    assert_eq!(app.me(&mallory.access_token()).await.status, 401);
}

#[tokio::test]
async fn emails_with_invisible_characters_are_refused_and_accents_are_one_account() {
    let app = spawn_app_with(&[]).await;
    for sneaky in [
        "ann\u{200B}@example.com",
        "ann@exa\u{202E}mple.com",
        "\u{FEFF}ann@example.com",
    ] {
        let reply = app.register(sneaky, STRONG_PASSWORD).await;
        reply.assert_problem(422, "validation_failed");
        assert!(reply.body["errors"]["email"].is_array(), "{}", reply.text);
    }
    // "é" composed and decomposed.
    let composed = app
        .register("ren\u{00E9}@example.com", STRONG_PASSWORD)
        .await;
    assert_eq!(composed.status, 201, "{}", composed.text);
    app.register("rene\u{0301}@example.com", STRONG_PASSWORD)
        .await
        .assert_problem(409, "email_taken");
    assert_eq!(
        app.login("RENE\u{0301}@example.com", STRONG_PASSWORD)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_database_error_is_logged_without_the_rows_it_quotes() {
    let db = TestDatabase::create().await;
    let app = spawn_app_on(Arc::new(db), &[]).await;
    app.signed_up("ann@example.com").await;
    let client = app.db.client().await;
    let duplicate = client
        .execute(
            "INSERT INTO users (id, email, password_hash, created_at) \
             SELECT gen_random_uuid(), email, password_hash, now() FROM users",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        format!("{duplicate:?}").contains("ann@example.com"),
        "the server quotes the row"
    );
    let logged = auth_core::error::cause_chain(&auth_core::Error::from(duplicate));
    assert!(!logged.contains("ann@example.com"), "{logged}");
    assert!(logged.contains("23505"), "{logged}");
}
