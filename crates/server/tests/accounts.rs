//! Accounts over HTTP: self-registration (a realm setting, off by default), the
//! administration API, the user's own logins and password.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

async fn post_anonymous(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{}", server.base, path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn self_registration_is_off_unless_the_realm_allows_it() {
    let closed = Server::start().await;
    let (s, e) = post_anonymous(
        &closed,
        "/api/v1/register",
        json!({"user": "eve", "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(e["error"]["code"], "forbidden");

    let open = Server::start_with(&[("SWITCHBOARD_ACCOUNTS_OPEN_REGISTRATION", "true")]).await;
    let (s, body) = post_anonymous(
        &open,
        "/api/v1/register",
        json!({"user": "Eve", "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["address"], "eve@localhost");
    let eve = open.login("eve").await;
    let (s, _) = eve.get("/api/v1/me").await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = post_anonymous(
        &open,
        "/api/v1/register",
        json!({"user": "eve", "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, e) = post_anonymous(
        &open,
        "/api/v1/register",
        json!({"user": "frank", "password": "short"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least 8"),
        "{e}"
    );
}

#[tokio::test]
async fn administrators_manage_accounts_over_http() {
    let server = Server::start_with(&[("SWITCHBOARD_ACCOUNTS_ADMINS", "root@localhost")]).await;
    let [root, alice] = server.users(["root", "alice"]).await;

    let (s, _) = alice
        .post(
            "/api/v1/admin/users",
            json!({"user": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only administrators");

    let (s, body) = root
        .post(
            "/api/v1/admin/users",
            json!({"user": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (_, list) = root.get("/api/v1/admin/users").await;
    let names: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["alice@localhost", "bob@localhost", "root@localhost"]
    );

    let bob = server.login("bob").await;
    let mut bob_ws = bob.ws().await;
    let (s, _) = root
        .put(
            "/api/v1/admin/users/bob/password",
            json!({"password": "a brand new password"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(
        bob_ws.wait_closed().await,
        "a password change cuts the sessions"
    );
    let (s, _) = bob.get("/api/v1/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "and revokes the tokens");

    let (s, _) = root
        .call(reqwest::Method::DELETE, "/api/v1/admin/users/bob", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, e) = root
        .call(reqwest::Method::DELETE, "/api/v1/admin/users/bob", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
}

#[tokio::test]
async fn users_list_and_revoke_their_logins_and_change_their_password() {
    let server = Server::start().await;
    server.add_user("alice");
    let phone = server.login("alice").await;
    let laptop = server.login("alice").await;
    let (_, logins) = phone.get("/api/v1/logins").await;
    let list = logins["logins"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let laptop_login = list
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .find(|id| *id != logins["current"].as_str().unwrap())
        .unwrap()
        .to_string();
    let mut laptop_ws = laptop.ws().await;
    let (s, _) = phone
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/logins/{laptop_login}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(
        laptop_ws.wait_closed().await,
        "the revoked login's session ends at once"
    );
    let (s, _) = laptop.get("/api/v1/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, _) = phone
        .post(
            "/api/v1/me/password",
            json!({"old": "wrong one", "new": "another good password"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = phone
        .post(
            "/api/v1/me/password",
            json!({"old": PASSWORD, "new": "another good password"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = phone.get("/api/v1/me").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the login that changed the password stays"
    );
    let (s, _) = post_anonymous(
        &server,
        "/api/v1/login",
        json!({"user": "alice", "password": "another good password"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn login_attempts_are_throttled() {
    let server = Server::start_with(&[("SWITCHBOARD_LIMITS_LOGIN_ATTEMPTS_PER_MINUTE", "3")]).await;
    server.add_user("alice");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (s, _) = post_anonymous(
            &server,
            "/api/v1/login",
            json!({"user": "alice", "password": "guess"}),
        )
        .await;
        statuses.push(s);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let (s, e) = post_anonymous(
        &server,
        "/api/v1/login",
        json!({"user": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits: {e}"
    );
    assert_eq!(e["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn a_removed_account_leaves_its_contacts_lists_at_once() {
    let server = Server::start().await;
    let [alice, bob] = server.users(["alice", "bob"]).await;
    alice.befriend(&bob).await;
    let mut bob_ws = bob.ws().await;
    let out = server.cli(&["user", "remove", "alice"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let removed = bob_ws
        .expect("alice leaves bob's list", |v| {
            v["type"] == "contact" && v["peer"] == "alice@localhost" && v["removed"] == true
        })
        .await;
    assert!(
        removed["position"].as_i64().unwrap() > 0,
        "a durable event: {removed}"
    );
    let (_, contacts) = bob.get("/api/v1/contacts").await;
    assert_eq!(contacts["contacts"], json!([]));
}
