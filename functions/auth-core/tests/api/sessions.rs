use serde_json::json;

use crate::helpers::{Reply, STRONG_PASSWORD, TestApp, spawn_app, spawn_app_on};

impl TestApp {
    pub async fn delete_with_token(&self, path: &str, token: &str) -> Reply {
        Reply::from(
            self.http
                .delete(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn send_json_with_token(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Reply {
        Reply::from(
            self.http
                .request(method, self.url(path))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Signs in with a given user agent, as another device would.
    pub async fn login_from(&self, email: &str, user_agent: &str) -> Reply {
        Reply::from(
            self.http
                .post(self.url("/api/v1/auth/login"))
                .header("user-agent", user_agent)
                .json(&json!({"email": email, "password": STRONG_PASSWORD}))
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

#[tokio::test]
async fn sessions_are_listed_newest_first_with_the_current_one_marked() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    let laptop = app.login_from("ann@example.com", "Laptop/1.0").await;
    let phone = app.login_from("ann@example.com", "Phone/2.0").await;
    let reply = app
        .get_with_token("/api/v1/sessions", &laptop.access_token())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let sessions = reply.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions[0]["user_agent"], "Phone/2.0");
    assert_eq!(sessions[1]["user_agent"], "Laptop/1.0");
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["user_agent"], "Laptop/1.0");
    for session in sessions {
        assert_eq!(session["ip"], "127.0.0.1");
        for field in ["id", "created_at", "last_used_at", "expires_at"] {
            assert!(session[field].is_string(), "{field}");
        }
    }
    // A dead session is not listed.
    app.post_json(
        "/api/v1/auth/logout",
        &json!({"refresh_token": phone.refresh_token()}),
    )
    .await;
    let after = app
        .get_with_token("/api/v1/sessions", &laptop.access_token())
        .await;
    assert_eq!(after.body["sessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn revoking_a_session_ends_its_tokens_at_once_on_every_instance() {
    let first = spawn_app().await;
    let second = spawn_app_on(first.db.clone(), &[]).await;
    first.signed_up("ann@example.com").await;
    let laptop = first.login_from("ann@example.com", "Laptop").await;
    let phone = first.login_from("ann@example.com", "Phone").await;
    let phone_id = crate::helpers::claim(&phone.access_token(), "sid");
    // Both instances have accepted (and remember having verified) the phone's token.
    for instance in [&first, &second] {
        assert_eq!(instance.me(&phone.access_token()).await.status, 200);
    }
    let reply = first
        .delete_with_token(
            &format!("/api/v1/sessions/{phone_id}"),
            &laptop.access_token(),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    for instance in [&first, &second] {
        instance
            .me(&phone.access_token())
            .await
            .assert_problem(401, "invalid_token");
    }
    second
        .refresh(&phone.refresh_token())
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(second.me(&laptop.access_token()).await.status, 200);
    // Twice is not found: it is no longer a live session.
    first
        .delete_with_token(
            &format!("/api/v1/sessions/{phone_id}"),
            &laptop.access_token(),
        )
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn another_users_session_is_not_found_and_untouched() {
    let app = spawn_app().await;
    let ann = app.signed_up("ann@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    let bob_session = crate::helpers::claim(&bob.access_token(), "sid");
    app.delete_with_token(
        &format!("/api/v1/sessions/{bob_session}"),
        &ann.access_token(),
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(app.me(&bob.access_token()).await.status, 200);
    app.delete_with_token("/api/v1/sessions/not-a-uuid", &ann.access_token())
        .await
        .assert_problem(404, "not_found");
    app.delete_with_token(
        &format!("/api/v1/sessions/{}", uuid::Uuid::now_v7()),
        &ann.access_token(),
    )
    .await
    .assert_problem(404, "not_found");
    app.delete_with_token(&format!("/api/v1/sessions/{bob_session}"), "junk")
        .await
        .assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn signing_out_everywhere_else_keeps_only_the_current_session() {
    let app = spawn_app().await;
    let first = app.signed_up("ann@example.com").await;
    let others = [
        app.login_from("ann@example.com", "A").await,
        app.login_from("ann@example.com", "B").await,
    ];
    let reply = app
        .delete_with_token("/api/v1/sessions", &first.access_token())
        .await;
    assert_eq!(reply.status, 204);
    for other in &others {
        app.me(&other.access_token())
            .await
            .assert_problem(401, "invalid_token");
        app.refresh(&other.refresh_token())
            .await
            .assert_problem(401, "invalid_token");
    }
    assert_eq!(app.me(&first.access_token()).await.status, 200);
    let sessions = app
        .get_with_token("/api/v1/sessions", &first.access_token())
        .await;
    assert_eq!(sessions.body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(app.get("/api/v1/sessions").await.status, 401);
}

#[tokio::test]
async fn concurrent_session_checks_each_get_their_own_answer() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    app.signed_up("bob@example.com").await;
    let mut tokens = Vec::new();
    for (email, device) in [
        ("ann@example.com", "A"),
        ("bob@example.com", "B"),
        ("ann@example.com", "C"),
        ("bob@example.com", "D"),
    ] {
        tokens.push((email, app.login_from(email, device).await.access_token()));
    }
    // Ann's second session ends; its token must be refused however the checks are grouped.
    let ended = crate::helpers::claim(&tokens[2].1, "sid");
    let reply = app
        .delete_with_token(&format!("/api/v1/sessions/{ended}"), &tokens[0].1)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let replies =
        futures::future::join_all((0..48).map(|i| app.me(&tokens[i % tokens.len()].1))).await;
    for (i, reply) in replies.iter().enumerate() {
        let (email, _) = tokens[i % tokens.len()];
        if i % tokens.len() == 2 {
            reply.assert_problem(401, "invalid_token");
        } else {
            assert_eq!(reply.status, 200, "{}", reply.text);
            assert_eq!(reply.body["email"], email);
        }
    }
}
