//! End-to-end tests of the foundation: the real server, real HTTP and WebSocket clients.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

/// How long to listen to be sure something does NOT arrive.
const QUIET: Duration = Duration::from_millis(400);

fn is_presence_from(v: &Value, who: &str) -> bool {
    v["type"] == "presence" && v["from"] == who
}

#[tokio::test]
async fn contact_request_then_accept_lets_presence_flow() {
    let server = Server::start().await;
    let [alice, bob] = server.users(["alice", "bob"]).await;
    let mut alice_ws = alice.ws().await;
    let mut bob_ws = bob.ws().await;

    let (s, _) = alice
        .post("/api/v1/contacts", json!({"address": "Bob"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let request = bob_ws
        .expect("contact request", |v| {
            v["type"] == "contact" && v["peer"] == "alice@localhost"
        })
        .await;
    assert_eq!(request["from"], "pending");
    assert!(
        request["position"].as_i64().unwrap() > 0,
        "contact events are durable"
    );

    // Before the answer, neither sees the other's presence.
    bob_ws
        .command(json!({"type": "presence", "show": "away", "status": "lunch"}))
        .await;
    let early = alice_ws.drain(QUIET).await;
    assert!(
        !early.iter().any(|v| is_presence_from(v, "bob@localhost")),
        "presence leaked before the request was accepted: {early:?}"
    );

    let (s, _) = bob
        .post("/api/v1/contacts/alice@localhost/accept", json!({}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let seen = alice_ws
        .expect("bob's presence", |v| is_presence_from(v, "bob@localhost"))
        .await;
    assert_eq!(seen["show"], "away");
    assert_eq!(seen["status"], "lunch");
    bob_ws
        .expect("alice's presence", |v| {
            is_presence_from(v, "alice@localhost")
        })
        .await;

    bob_ws
        .command(json!({"type": "presence", "show": "dnd", "status": "in a meeting"}))
        .await;
    let seen = alice_ws
        .expect("bob's new presence", |v| {
            is_presence_from(v, "bob@localhost") && v["show"] == "dnd"
        })
        .await;
    assert_eq!(seen["status"], "in a meeting");

    let (_, contacts) = alice.get("/api/v1/contacts").await;
    let entry = &contacts["contacts"][0];
    assert_eq!(entry["address"], "bob@localhost");
    assert_eq!(entry["to"], "accepted");
    assert_eq!(entry["from"], "accepted");
    assert_eq!(entry["presence"]["show"], "dnd");
}

#[tokio::test]
async fn refused_request_grants_nothing() {
    let server = Server::start().await;
    let [alice, bob] = server.users(["alice", "bob"]).await;
    alice
        .post("/api/v1/contacts", json!({"address": "bob"}))
        .await;
    let (s, _) = bob
        .post("/api/v1/contacts/alice@localhost/refuse", json!({}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, contacts) = alice.get("/api/v1/contacts").await;
    assert_eq!(contacts["contacts"][0]["to"], "none");
    let (s, err) = bob
        .post("/api/v1/contacts/alice@localhost/accept", json!({}))
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "no request is left to accept: {err}"
    );
}

#[tokio::test]
async fn invisible_users_and_strangers_see_no_presence() {
    let server = Server::start().await;
    let [alice, bob, carol] = server.users(["alice", "bob", "carol"]).await;
    alice.befriend(&bob).await;
    let mut alice_ws = alice.ws().await;
    let mut carol_ws = carol.ws().await;
    let mut bob_ws = bob.ws().await;
    alice_ws
        .expect("bob online", |v| {
            is_presence_from(v, "bob@localhost") && v["show"] == "available"
        })
        .await;

    // Bob goes invisible: Alice sees him go offline, and nothing after that.
    let (s, _) = bob
        .put("/api/v1/me/settings", json!({"visibility": "nobody"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    alice_ws
        .expect("bob offline", |v| {
            is_presence_from(v, "bob@localhost") && v["show"] == "offline"
        })
        .await;
    bob_ws
        .command(json!({"type": "presence", "show": "away", "status": "secret"}))
        .await;
    let frames = alice_ws.drain(QUIET).await;
    assert!(
        !frames.iter().any(|v| is_presence_from(v, "bob@localhost")),
        "an invisible user's presence reached a contact: {frames:?}"
    );
    let (_, contacts) = alice.get("/api/v1/contacts").await;
    assert_eq!(contacts["contacts"][0]["presence"]["show"], "offline");

    // Chosen contacts only: Alice is not chosen yet, then she is.
    bob.put("/api/v1/me/settings", json!({"visibility": "chosen"}))
        .await;
    let frames = alice_ws.drain(QUIET).await;
    assert!(!frames.iter().any(|v| is_presence_from(v, "bob@localhost")));
    let (s, _) = bob
        .call(
            reqwest::Method::PATCH,
            "/api/v1/contacts/alice@localhost",
            Some(json!({"chosen": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let seen = alice_ws
        .expect("bob visible to the chosen", |v| {
            is_presence_from(v, "bob@localhost")
        })
        .await;
    assert_eq!(seen["show"], "away");

    // Carol, a stranger, never saw anything of Bob or Alice.
    let frames = carol_ws.drain(QUIET).await;
    assert!(
        !frames.iter().any(|v| v["type"] == "presence"),
        "a stranger received presence: {frames:?}"
    );
    let (_, contacts) = carol.get("/api/v1/contacts").await;
    assert_eq!(contacts["contacts"], json!([]));
}

#[tokio::test]
async fn direct_and_group_messages_over_websocket() {
    let server = Server::start().await;
    let [alice, bob, carol] = server.users(["alice", "bob", "carol"]).await;
    alice.befriend(&bob).await;
    alice.befriend(&carol).await;
    let mut alice_ws = alice.ws().await;
    let mut bob_ws = bob.ws().await;
    let mut carol_ws = carol.ws().await;

    let direct = alice.direct(&bob).await;
    assert_eq!(
        bob.direct(&alice).await,
        direct,
        "one direct conversation per pair"
    );
    alice_ws
        .command(
            json!({"type": "send", "conversation": direct, "client_id": "m1", "body": "hello bob"}),
        )
        .await;
    let ack = alice_ws.expect("the ack", |v| v["type"] == "sent").await;
    assert_eq!(ack["ref"], "m1");
    assert_eq!(ack["stored"], true);
    assert_eq!(ack["seq"], 1);
    let got = bob_ws
        .expect("the message", |v| v["type"] == "message")
        .await;
    assert_eq!(got["body"], "hello bob");
    assert_eq!(got["from"], "alice@localhost");
    assert_eq!(got["conversation"], direct.as_str());
    let frames = carol_ws.drain(QUIET).await;
    assert!(
        !frames.iter().any(|v| v["type"] == "message"),
        "carol is not in that conversation"
    );

    let (s, group) = alice
        .post(
            "/api/v1/conversations",
            json!({"members": ["bob", "carol"], "title": "plans"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{group}");
    let group_id = group["id"].as_str().unwrap().to_string();
    assert_eq!(group["members"].as_array().unwrap().len(), 3);
    let (s, ack) = bob.send(&group_id, "g1", "hi all").await;
    assert_eq!(s, StatusCode::CREATED, "{ack}");
    for ws in [&mut alice_ws, &mut carol_ws] {
        let got = ws
            .expect("the group message", |v| {
                v["type"] == "message" && v["conversation"] == group_id.as_str()
            })
            .await;
        assert_eq!(got["body"], "hi all");
        assert_eq!(got["from"], "bob@localhost");
    }
    // Carol reads: Bob's read marker arrives as a receipt.
    carol_ws
        .command(json!({"type": "read", "conversation": group_id, "upto": 1}))
        .await;
    let receipt = bob_ws
        .expect("carol's read receipt", |v| {
            v["type"] == "receipt" && v["kind"] == "read"
        })
        .await;
    assert_eq!(receipt["member"], "carol@localhost");
    assert_eq!(receipt["upto"], 1);
    let (_, list) = carol.get("/api/v1/conversations").await;
    let entry = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == group_id.as_str())
        .unwrap();
    assert_eq!(entry["unread"], 0);
}

#[tokio::test]
async fn messages_over_long_poll() {
    let server = Server::start().await;
    let (alice, bob, direct) = server.friends().await;

    let (s, session) = alice.post("/api/v1/sessions", json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    let session = session["session"].as_str().unwrap().to_string();
    let mut after = 0i64;

    // A poll that is already waiting when the message is sent.
    let poll_path =
        |after: i64| format!("/api/v1/sessions/{session}/events?after={after}&timeout=10");
    let waiting = {
        let path = poll_path(after);
        let http = alice.http.clone();
        let url = format!("{}{}", alice.base, path);
        let token = alice.token.clone();
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let (s, _) = bob.send(&direct, "b1", "are you there?").await;
    assert_eq!(s, StatusCode::CREATED);
    let mut received = Vec::new();
    let first = waiting.await.unwrap();
    received.extend(first["events"].as_array().unwrap().clone());
    after = first["position"].as_i64().unwrap();
    while !received.iter().any(|v| v["type"] == "message") {
        let (s, page) = alice.get(&poll_path(after)).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        after = page["position"].as_i64().unwrap();
        received.extend(page["events"].as_array().unwrap().clone());
    }
    let message = received.iter().find(|v| v["type"] == "message").unwrap();
    assert_eq!(message["body"], "are you there?");

    // Alice answers over plain HTTP; Bob's WebSocket gets it.
    let mut bob_ws = bob.ws().await;
    let (s, _) = alice.send(&direct, "a1", "yes").await;
    assert_eq!(s, StatusCode::CREATED);
    let got = bob_ws
        .expect("alice's answer", |v| {
            v["type"] == "message" && v["body"] == "yes"
        })
        .await;
    assert_eq!(got["from"], "alice@localhost");

    // A group message reaches the long-poll client too, exactly once.
    let (_, group) = bob
        .post(
            "/api/v1/conversations",
            json!({"members": ["alice"], "title": "g"}),
        )
        .await;
    let group_id = group["id"].as_str().unwrap().to_string();
    bob.send(&group_id, "b2", "group hello").await;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let (_, page) = alice
            .get(&format!(
                "/api/v1/sessions/{session}/events?after={after}&timeout=1"
            ))
            .await;
        after = page["position"].as_i64().unwrap();
        for e in page["events"].as_array().unwrap() {
            if e["type"] == "message" {
                bodies.push(e["body"].as_str().unwrap().to_string());
            }
        }
        if bodies.contains(&"group hello".to_string()) {
            break;
        }
    }
    assert_eq!(bodies, vec!["yes".to_string(), "group hello".to_string()]);
}

#[tokio::test]
async fn same_client_id_twice_is_stored_once() {
    let server = Server::start().await;
    let (alice, bob, direct) = server.friends().await;
    let mut bob_ws = bob.ws().await;
    let (s1, first) = alice.send(&direct, "same-id", "once").await;
    let (s2, second) = alice.send(&direct, "same-id", "once").await;
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["seq"], second["seq"]);
    let (_, history) = alice
        .get(&format!("/api/v1/conversations/{direct}/messages"))
        .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    let frames = bob_ws.drain(QUIET).await;
    let messages: Vec<_> = frames.iter().filter(|v| v["type"] == "message").collect();
    assert_eq!(
        messages.len(),
        1,
        "the recipient got the message once: {frames:?}"
    );
}

#[tokio::test]
async fn acknowledged_message_survives_sigkill() {
    let mut server = Server::start().await;
    let (alice, bob, direct) = server.friends().await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let (s, ack) = alice
            .send(&direct, &format!("k{i}"), &format!("before the crash {i}"))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        acked.push(ack["id"].clone());
    }
    server.kill();
    server.restart().await;

    // Bob was offline the whole time: the message cache hands him all twenty, in order.
    let mut bob_ws = bob.ws().await;
    let mut got = Vec::new();
    while got.len() < acked.len() {
        let v = bob_ws
            .expect("a cached message", |v| v["type"] == "message")
            .await;
        got.push(v["id"].clone());
    }
    assert_eq!(got, acked);
    let (_, history) = alice
        .get(&format!(
            "/api/v1/conversations/{direct}/messages?limit=100"
        ))
        .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn resumed_session_gets_every_missed_event_exactly_once() {
    let server = Server::start().await;
    let (alice, bob, direct) = server.friends().await;
    let mut bob_ws = bob.ws().await;
    alice.send(&direct, "m0", "seen before the drop").await;
    bob_ws
        .expect("m0", |v| v["body"] == "seen before the drop")
        .await;
    bob_ws.ack().await;
    let (session, position) = (bob_ws.session.clone(), bob_ws.position);
    bob_ws.drop_connection();

    // While Bob's connection is down: five messages and a new contact request.
    for i in 1..=5 {
        let (s, _) = alice
            .send(&direct, &format!("m{i}"), &format!("missed {i}"))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    server.add_user("carol");
    let carol = server.login("carol").await;
    carol
        .post("/api/v1/contacts", json!({"address": "bob"}))
        .await;

    let mut bob_ws = bob.ws_resume(&session, position).await;
    assert_eq!(bob_ws.session, session, "the same session continues");
    let frames = bob_ws.drain(Duration::from_millis(800)).await;
    let bodies: Vec<&str> = frames
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["missed 1", "missed 2", "missed 3", "missed 4", "missed 5"]
    );
    let requests = frames
        .iter()
        .filter(|v| v["type"] == "contact" && v["peer"] == "carol@localhost")
        .count();
    assert_eq!(
        requests, 1,
        "the contact request is replayed once: {frames:?}"
    );
    let positions: Vec<i64> = frames
        .iter()
        .filter_map(|v| v["position"].as_i64())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {positions:?}"
    );

    // Live delivery continues on the resumed session, still exactly once.
    alice.send(&direct, "m6", "after the resume").await;
    let frames = bob_ws.drain(QUIET).await;
    let live: Vec<_> = frames.iter().filter(|v| v["type"] == "message").collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["body"], "after the resume");

    // Resuming from an older position replays from there.
    let older = bob.ws_resume(&session, position - 1).await;
    drop(older);
    let mut again = bob.ws_resume(&session, 0).await;
    let frames = again.drain(QUIET).await;
    let count = frames.iter().filter(|v| v["type"] == "message").count();
    assert_eq!(count, 7, "everything after position 0: {frames:?}");
}

#[tokio::test]
async fn session_survives_a_server_restart() {
    let mut server = Server::start().await;
    let (alice, bob, direct) = server.friends().await;
    let mut bob_ws = bob.ws().await;
    alice.send(&direct, "r1", "one").await;
    bob_ws.expect("one", |v| v["body"] == "one").await;
    let (session, position) = (bob_ws.session.clone(), bob_ws.position);
    drop(bob_ws);
    // The session record was written when the session opened; a hard kill keeps it.
    server.kill();
    server.restart().await;
    alice.send(&direct, "r2", "two").await;
    let mut bob_ws = bob.ws_resume(&session, position).await;
    let got = bob_ws.expect("two", |v| v["type"] == "message").await;
    assert_eq!(got["body"], "two");
    let frames = bob_ws.drain(QUIET).await;
    assert!(
        !frames.iter().any(|v| v["type"] == "message"),
        "nothing doubled: {frames:?}"
    );
}

#[tokio::test]
async fn confidential_conversation_leaves_no_row_in_the_store() {
    let mut server = Server::start().await;
    let [alice, bob] = server.users(["alice", "bob"]).await;
    alice.befriend(&bob).await;
    let mut bob_ws = bob.ws().await;
    let (s, conv) = alice
        .post(
            "/api/v1/conversations",
            json!({"members": ["bob"], "title": "off the record", "confidential": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{conv}");
    let id = conv["id"].as_str().unwrap().to_string();
    bob_ws
        .expect("the invitation", |v| {
            v["type"] == "confidential" && v["conversation"]["id"] == id.as_str()
        })
        .await;
    let marker = "confidential-marker-7f3a9";
    let (s, ack) = alice.send(&id, "c1", marker).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        ack["stored"], false,
        "the sender is told it was relayed, not stored"
    );
    let got = bob_ws
        .expect("the relayed message", |v| v["type"] == "relayed")
        .await;
    assert_eq!(got["body"], marker);
    let (_, history) = bob
        .get(&format!("/api/v1/conversations/{id}/messages"))
        .await;
    assert_eq!(history["messages"], json!([]));

    assert!(server.terminate(), "the server stops cleanly");
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    let db = server.db_path();
    assert!(
        !store_contains(&db, marker.as_bytes()),
        "the message body was stored"
    );
    assert!(
        !store_contains(&db, uuid.as_bytes()),
        "the conversation id was stored (bytes)"
    );
    assert!(
        !store_contains(&db, id.as_bytes()),
        "the conversation id was stored (text)"
    );
    assert!(
        !store_contains(&db, b"off the record"),
        "the title was stored"
    );
    // The check can fail: an ordinary message's body is found.
    server.restart().await;
    let direct = alice.direct(&bob).await;
    alice.send(&direct, "n1", "an ordinary marker").await;
    assert!(server.terminate());
    assert!(store_contains(&db, b"an ordinary marker"));
}

#[tokio::test]
async fn strangers_cannot_start_conversations_unless_allowed() {
    let server = Server::start().await;
    let [alice, mallory] = server.users(["alice", "mallory"]).await;
    let (s, err) = mallory
        .post("/api/v1/conversations", json!({"with": "alice"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "recipient_unavailable");
    let (s2, err2) = mallory
        .post("/api/v1/conversations", json!({"with": "nobody-here"}))
        .await;
    assert_eq!(s2, s);
    assert_eq!(err2, err, "a refusal reads exactly like an unknown user");

    // Alice opens her door to anyone: now Mallory may write, and Alice may answer.
    alice
        .put("/api/v1/me/settings", json!({"message_policy": "anyone"}))
        .await;
    let direct = mallory.direct(&alice).await;
    let (s, _) = mallory.send(&direct, "x", "hello stranger").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = alice.send(&direct, "y", "hello").await;
    assert_eq!(s, StatusCode::CREATED);

    // Blocking cuts it off again.
    alice
        .post("/api/v1/blocks", json!({"address": "mallory"}))
        .await;
    let (s, err) = mallory.send(&direct, "z", "still there?").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["code"], "recipient_unavailable");
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors() {
    let server = Server::start_with(&[("SWITCHBOARD_LIMITS_MAX_MESSAGE_BYTES", "100")]).await;
    let (alice, _bob, direct) = server.friends().await;

    let (s, e) = alice.send(&direct, "big", &"x".repeat(101)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(e["error"]["code"], "too_large");
    assert!(e["error"]["message"].as_str().unwrap().contains("100"));

    let r = alice
        .http
        .post(format!(
            "{}/api/v1/conversations/{direct}/messages",
            alice.base
        ))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_json");

    let (s, e) = alice
        .post(
            &format!("/api/v1/conversations/{direct}/messages"),
            json!({"body": "no id"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_id"),
        "{e}"
    );

    let (s, e) = alice.send("not-a-uuid", "a", "b").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not-a-uuid")
    );

    let (s, e) = alice
        .send(&uuid::Uuid::new_v4().to_string(), "a", "b")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["code"], "not_found");

    let (s, e) = alice
        .post("/api/v1/contacts", json!({"address": "no spaces allowed"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], "invalid_address");

    let r = reqwest::get(format!("{}/api/v1/contacts", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unauthenticated");

    let (s, e) = alice.get("/api/v1/no-such-thing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["code"], "not_found");

    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/login", server.base))
        .json(&json!({"user": "alice", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let (s, e) = alice
        .get("/api/v1/sessions/nope/events?after=0&timeout=1")
        .await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(e["error"]["code"], "session_gone");
}

#[tokio::test]
async fn browser_login_uses_an_httponly_cookie_and_csrf_token() {
    let server = Server::start().await;
    server.add_user("alice");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/login", server.base))
        .json(&json!({"user": "alice", "password": PASSWORD, "cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body["token"].is_null(),
        "a cookie login does not show its token to scripts"
    );
    let csrf = body["csrf"].as_str().unwrap().to_string();
    let pair = cookie.split(';').next().unwrap().to_string();

    let r = http
        .get(format!("{}/api/v1/me", server.base))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .post(format!("{}/api/v1/contacts", server.base))
        .header("cookie", &pair)
        .json(&json!({"address": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "no CSRF token, no change"
    );
    let r = http
        .put(format!("{}/api/v1/me/settings", server.base))
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .json(&json!({"display_name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!("{}/api/v1/me", server.base))
        .header("cookie", &pair)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a foreign origin cannot use the cookie"
    );
}

#[tokio::test]
async fn openapi_document_and_metrics_are_served() {
    let server = Server::start().await;
    let r = reqwest::get(format!("{}/api/v1/openapi.json", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/conversations/{id}/messages"]["post"].is_object());
    let (alice, bob, direct) = server.friends().await;
    alice.send(&direct, "1", "counted").await;
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("switchboard_messages_in_total 1"), "{text}");
    let _ws = bob.ws().await;
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(gauge("switchboard_connections") >= 1.0, "{text}");
    assert!(gauge("switchboard_sessions") >= 1.0, "{text}");
    assert!(text.contains("switchboard_store_commit_seconds"), "{text}");
}

#[tokio::test]
async fn removing_a_user_while_the_server_runs_cuts_their_sessions() {
    let server = Server::start().await;
    let [alice, _bob] = server.users(["alice", "bob"]).await;
    let mut ws = alice.ws().await;
    let out = server.cli(&["user", "remove", "alice"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The connection closes and the token stops working at once.
    assert!(
        ws.wait_closed().await,
        "the removed user's connection was not closed"
    );
    let (s, _) = alice.get("/api/v1/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn limits_are_enforced_with_clear_errors() {
    let server = Server::start_with(&[
        ("SWITCHBOARD_LIMITS_MESSAGES_PER_SECOND", "1"),
        ("SWITCHBOARD_LIMITS_MESSAGE_BURST", "3"),
        ("SWITCHBOARD_HTTP_MAX_BODY_BYTES", "2048"),
        ("SWITCHBOARD_LIMITS_MAX_MESSAGE_BYTES", "1024"),
        ("SWITCHBOARD_HTTP_CONNECTIONS_PER_IP", "4"),
        ("SWITCHBOARD_SESSIONS_MAX_PER_USER", "2"),
    ])
    .await;
    let (alice, bob, direct) = server.friends().await;

    // Messages per second per account: a burst of three, then a clear refusal.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let (s, e) = alice.send(&direct, &format!("r{i}"), "hi").await;
        statuses.push((s, e["error"]["code"].clone()));
    }
    assert_eq!(statuses[2].0, StatusCode::CREATED);
    assert_eq!(
        statuses[3],
        (StatusCode::TOO_MANY_REQUESTS, json!("rate_limited"))
    );

    // Sessions per person.
    for _ in 0..2 {
        let (s, _) = bob.post("/api/v1/sessions", json!({})).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, e) = bob.post("/api/v1/sessions", json!({})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the limit is 2"),
        "{e}"
    );

    // Request body size.
    let (s, e) = bob.send(&direct, "big", &"x".repeat(4096)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    assert_eq!(e["error"]["code"], "too_large");

    // Connections per client address: the fifth open connection is answered 429.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap(),
        );
    }
    let r = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the limit is 4"),
        "{e}"
    );
    drop(held);
}

#[tokio::test]
async fn a_persons_other_sessions_see_what_they_sent() {
    let server = Server::start().await;
    let (alice, _bob, direct) = server.friends().await;
    let mut phone = alice.ws().await;
    let mut laptop = alice.ws().await;
    phone
        .command(json!({"type": "send", "conversation": direct, "client_id": "p1", "body": "from my phone"}))
        .await;
    let ack = phone.expect("the ack", |v| v["type"] == "sent").await;
    let copy = laptop
        .expect("the copy on the laptop", |v| v["type"] == "message")
        .await;
    assert_eq!(copy["body"], "from my phone");
    assert_eq!(
        copy["position"], ack["position"],
        "the ack carries the message's position"
    );
    let frames = phone.drain(QUIET).await;
    assert!(
        !frames.iter().any(|v| v["type"] == "message"),
        "the sending session gets the ack, not an echo: {frames:?}"
    );
}

#[tokio::test]
async fn long_poll_repeats_what_a_lost_answer_carried() {
    let server = Server::start().await;
    let (alice, bob, direct) = server.friends().await;
    let (_, session) = alice.post("/api/v1/sessions", json!({})).await;
    let session = session["session"].as_str().unwrap().to_string();
    bob.send(&direct, "m1", "first").await;

    let poll = |after: i64| {
        let path = format!("/api/v1/sessions/{session}/events?after={after}&timeout=1");
        let alice = &alice;
        async move { alice.get(&path).await.1 }
    };
    let messages = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "message")
            .map(|e| e["body"].as_str().unwrap().to_string())
            .collect()
    };
    let first = poll(0).await;
    assert_eq!(messages(&first), ["first"]);
    // The answer is lost on its way: the client asks again from where it was.
    let again = poll(0).await;
    assert_eq!(messages(&again), ["first"], "the lost message comes again");
    let position = again["position"].as_i64().unwrap();
    bob.send(&direct, "m2", "second").await;
    let next = poll(position).await;
    assert_eq!(
        messages(&next),
        ["second"],
        "nothing doubled once acknowledged"
    );

    // The session records when its client was last seen.
    let (_, sessions) = alice.get("/api/v1/sessions").await;
    let entry = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == session.as_str())
        .expect("the long-poll session is listed")
        .clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        now - entry["last_seen"].as_i64().unwrap() < 10_000,
        "{entry}"
    );
}

#[tokio::test]
async fn a_large_message_travels_over_the_websocket() {
    let server = Server::start().await;
    let (alice, bob, direct) = server.friends().await;
    let mut alice_ws = alice.ws().await;
    let mut bob_ws = bob.ws().await;
    // Just under the default 64 KiB limit, far above the socket's small idle read buffer.
    let body = "é".repeat(30_000);
    alice_ws
        .command(json!({"type": "send", "conversation": direct, "client_id": "big", "body": body}))
        .await;
    let ack = alice_ws
        .expect("the ack", |v| v["type"] == "sent" || v["type"] == "error")
        .await;
    assert_eq!(ack["type"], "sent", "{ack}");
    let got = bob_ws
        .expect("the message", |v| v["type"] == "message")
        .await;
    assert_eq!(got["body"].as_str().unwrap(), body);
}
