//! End-to-end tests of the thin clients: `/lite` (HTML pages and forms, no JavaScript) and
//! `/wap` (WML 1.1 decks), driven with plain HTTP requests and manual cookie handling.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use support::*;

/// A browser without JavaScript: follows no redirects by itself and keeps its own cookies.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
    /// The raw Set-Cookie lines of the last answer.
    last_set_cookies: Vec<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> String {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The value of the first hidden/post field called `name`.
    fn field(&self, name: &str) -> String {
        let needle = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&needle)
            .unwrap_or_else(|| panic!("no field {name} in:\n{}", self.body))
            + needle.len();
        let end = self.body[start..].find('"').expect("the value ends") + start;
        self.body[start..end].to_string()
    }
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
            base: server.base.clone(),
            cookies: HashMap::new(),
            last_set_cookies: Vec::new(),
        }
    }

    async fn request(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie)
        };
        let r = req.send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        self.last_set_cookies = headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        for line in &self.last_set_cookies {
            let pair = line.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if line.contains("Max-Age=0") || v.is_empty() {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        let body = r.text().await.unwrap_or_default();
        Page {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.request(req).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(fields));
        self.request(req).await
    }

    /// Signs in through `{base}/login` and checks the cookies it sets.
    async fn sign_in(&mut self, base: &str, user: &str) {
        let p = self
            .post(
                &format!("{base}/login"),
                &[("user", user), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "sign-in: {}", p.body);
        assert_eq!(p.location(), base);
        for name in ["sb_login", "sb_csrf", "sb_thin"] {
            let line = self
                .last_set_cookies
                .iter()
                .find(|l| l.starts_with(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} cookie: {:?}", self.last_set_cookies));
            for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
                assert!(line.contains(attribute), "{name} lacks {attribute}: {line}");
            }
        }
    }

    fn csrf(&self) -> String {
        self.cookies.get("sb_csrf").expect("a CSRF cookie").clone()
    }
}

fn assert_lite_headers(p: &Page) {
    assert!(
        p.content_type().starts_with("text/html"),
        "{}",
        p.content_type()
    );
    let csp = p
        .headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(
        csp,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    );
    assert_eq!(p.headers.get("cache-control").unwrap(), "no-store");
    assert!(!p.body.contains("<script"), "no scripts: {}", p.body);
    assert!(p.body.starts_with("<!DOCTYPE html>"));
}

/// A minimal XML well-formedness check: tags balance, attributes are quoted, and every `&`
/// starts an entity XML knows.
fn check_xml_in_rust(text: &str) {
    let body = text
        .strip_prefix("<?xml version=\"1.0\"?>\n")
        .expect("an XML declaration first");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(['<', '&']) {
        let (before, after) = rest.split_at(i);
        assert!(!before.contains('>'), "a stray > before {after:.40}");
        if after.starts_with('&') {
            let end = after.find(';').expect("an entity ends with ;");
            let name = &after[1..end];
            assert!(
                ["amp", "lt", "gt", "quot", "apos"].contains(&name) || name.starts_with('#'),
                "unknown entity &{name};"
            );
            rest = &after[end + 1..];
            continue;
        }
        let end = after.find('>').expect("a tag ends");
        let tag = &after[1..end];
        rest = &after[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        assert!(!tag.contains('<'), "< inside a tag: <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().expect("a tag name");
            stack.push(name.to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
}

/// Checks that a response is a well-formed WML deck (with xmllint and in Rust).
fn assert_wml(p: &Page) {
    assert!(
        p.content_type().starts_with("text/vnd.wap.wml"),
        "content type {}",
        p.content_type()
    );
    assert!(
        p.body.contains(
            "<!DOCTYPE wml PUBLIC \"-//WAPFORUM//DTD WML 1.1//EN\" \"http://www.wapforum.org/DTD/wml_1.1.xml\">"
        ),
        "the WML 1.1 doctype: {}",
        p.body
    );
    check_xml_in_rust(&p.body);
    let mut child = match Command::new("xmllint")
        .args(["--noout", "--nonet", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            panic!("xmllint is needed to check WML decks (Debian package libxml2-utils): {e}")
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(p.body.as_bytes())
        .expect("write to xmllint");
    let out = child.wait_with_output().expect("xmllint runs");
    assert!(
        out.status.success(),
        "xmllint rejects the deck: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.body
    );
}

fn lynx_dump(html: &str) -> Option<String> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("page.html");
    std::fs::write(&path, html).ok()?;
    let out = Command::new("lynx")
        .args(["-dump", "-force_html", "-nolist"])
        .arg(&path)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn history_bodies(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn lite_client_does_everything_with_forms() {
    let server = Server::start().await;
    let [alice, _bob, carol] = server.users(["alice", "bob", "carol"]).await;
    let mut alice_ws = alice.ws().await;

    // The sign-in page, then a wrong password, then signing in.
    let mut bob = Browser::new(&server);
    let p = bob.get("/lite").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_lite_headers(&p);
    assert!(p.body.contains("action=\"/lite/login\""));
    let p = bob
        .post("/lite/login", &[("user", "bob"), ("password", "wrong")])
        .await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(
        p.body.contains("Wrong user name or password."),
        "{}",
        p.body
    );
    bob.sign_in("/lite", "bob").await;

    // Two contact requests wait for Bob.
    for asker in [&alice, &carol] {
        let (s, _) = asker
            .post("/api/v1/contacts", json!({"address": "bob"}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let p = bob.get("/lite").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_lite_headers(&p);
    assert!(
        p.body
            .contains("Signed in as <strong>bob@localhost</strong>")
    );
    assert!(
        p.body
            .contains("<span class=\"who\">alice@localhost</span> asks to be your contact."),
        "{}",
        p.body
    );
    assert!(p.body.contains("carol@localhost</span> asks"));
    let csrf = bob.csrf();
    assert_eq!(p.field("csrf"), csrf);
    if let Some(text) = lynx_dump(&p.body) {
        assert!(
            text.contains("alice@localhost asks to be your contact"),
            "{text}"
        );
        assert!(text.contains("Contact requests"), "{text}");
    } else {
        eprintln!("lynx is not installed: skipping the lynx -dump check");
    }

    // Bob accepts Alice and refuses Carol.
    let p = bob
        .post(
            "/lite/accept",
            &[("csrf", &csrf), ("address", "alice@localhost")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), "/lite");
    let p = bob
        .post(
            "/lite/refuse",
            &[("csrf", &csrf), ("address", "carol@localhost")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);

    // Bob's page session makes him online for Alice.
    alice_ws
        .expect("Bob online", |v| {
            v["type"] == "presence" && v["from"] == "bob@localhost" && v["show"] == "available"
        })
        .await;

    // Alice's presence and status text show on Bob's page, escaped.
    let (s, b) = alice
        .put(
            &format!("/api/v1/sessions/{}/presence", alice_ws.session),
            json!({"show": "away", "status": "At <lunch> & back"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let p = bob.get("/lite").await;
    assert!(!p.body.contains("asks to be your contact"), "{}", p.body);
    assert!(
        p.body
            .contains("alice@localhost</span> [Away] At &lt;lunch&gt; &amp; back"),
        "{}",
        p.body
    );
    assert!(!p.body.contains("carol@localhost"), "refused: {}", p.body);

    // Bob sets his presence from the page; Alice sees it live.
    let p = bob
        .post(
            "/lite/presence",
            &[("csrf", &csrf), ("show", "dnd"), ("status", "busy <b>")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    alice_ws
        .expect("Bob busy", |v| {
            v["type"] == "presence"
                && v["from"] == "bob@localhost"
                && v["show"] == "dnd"
                && v["status"] == "busy <b>"
        })
        .await;
    let p = bob.get("/lite").await;
    assert!(p.body.contains("value=\"busy &lt;b&gt;\""), "{}", p.body);

    // Bob opens the conversation with Alice.
    let p = bob
        .post("/lite/open", &[("csrf", &csrf), ("address", "alice")])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let conversation = alice
        .direct(&Client {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            token: String::new(),
            address: "bob@localhost".into(),
        })
        .await;
    assert_eq!(p.location(), format!("/lite/c/{conversation}"));
    let page_path = p.location();

    // Bob sends; Alice's WebSocket gets it. The same form submitted twice stores once.
    let p = bob.get(&page_path).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_lite_headers(&p);
    assert!(p.body.contains("No messages yet."));
    let client_id = p.field("client_id");
    let text = "hello <script>alert(1)</script> & 'bye'";
    let send_path = format!("{page_path}/send");
    let form = [
        ("csrf", csrf.as_str()),
        ("client_id", client_id.as_str()),
        ("body", text),
    ];
    let p = bob.post(&send_path, &form).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), page_path);
    alice_ws
        .expect("Bob's message", |v| {
            v["type"] == "message" && v["body"] == text
        })
        .await;
    let p = bob.post(&send_path, &form).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let (_, h) = alice
        .get(&format!("/api/v1/conversations/{conversation}/messages"))
        .await;
    assert_eq!(history_bodies(&h), vec![text.to_string()], "stored once");

    // A new page render has a new client id.
    let p = bob.get(&page_path).await;
    assert_ne!(p.field("client_id"), client_id);
    assert!(!p.body.contains("<script>"), "{}", p.body);
    assert!(
        p.body
            .contains("hello &lt;script&gt;alert(1)&lt;/script&gt; &amp; &#39;bye&#39;"),
        "{}",
        p.body
    );
    assert!(p.body.contains("<span class=\"who\">me</span>"));

    // Forms without the CSRF token, or with a wrong one, are refused and do nothing.
    let p = bob
        .post(
            &send_path,
            &[("client_id", "forged-1"), ("body", "forged message")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_lite_headers(&p);
    assert!(p.body.contains("security token"), "{}", p.body);
    let p = bob
        .post(
            &send_path,
            &[
                ("csrf", "not-the-token"),
                ("client_id", "forged-2"),
                ("body", "forged message"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = bob
        .post("/lite/contacts", &[("address", "carol@localhost")])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let saved = bob.cookies.remove("sb_csrf").expect("the CSRF cookie");
    let p = bob
        .post(
            &send_path,
            &[
                ("csrf", &csrf),
                ("client_id", "forged-3"),
                ("body", "forged message"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "field without cookie");
    bob.cookies.insert("sb_csrf".into(), saved);
    let (_, h) = alice
        .get(&format!("/api/v1/conversations/{conversation}/messages"))
        .await;
    assert_eq!(history_bodies(&h).len(), 1, "nothing forged was stored");

    // Alice writes; Bob's page shows the sender and an unread count, then the message.
    let (s, _) = alice.send(&conversation, "a-1", "hi bob & co").await;
    assert_eq!(s, StatusCode::CREATED);
    let p = bob.get("/lite").await;
    assert!(p.body.contains("(1 unread)"), "{}", p.body);
    let p = bob.get(&page_path).await;
    let mine = p.body.find("&#39;bye&#39;").expect("Bob's message");
    let theirs = p.body.find("hi bob &amp; co").expect("Alice's message");
    assert!(mine < theirs, "oldest first");
    assert!(
        p.body
            .contains("<span class=\"who\">alice@localhost</span>")
    );
    let p = bob.get("/lite").await;
    assert!(!p.body.contains("unread"), "read now: {}", p.body);

    // Only the newest twenty messages are on the page, with a link to older ones.
    for i in 0..25 {
        let (s, _) = alice
            .send(&conversation, &format!("n-{i}"), &format!("number {i}."))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let p = bob.get(&page_path).await;
    assert!(p.body.contains("number 24."));
    assert!(p.body.contains("number 5."));
    assert!(!p.body.contains("number 4."), "{}", p.body);
    assert!(p.body.contains("Older messages"));

    // Errors are readable pages with the right status.
    let p = bob
        .post(
            "/lite/contacts",
            &[("csrf", &csrf), ("address", "not an address!")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert_lite_headers(&p);
    assert!(p.body.contains("Something went wrong"));
    let p = bob.get("/lite/c/not-a-conversation").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let p = bob
        .get("/lite/c/00000000-0000-0000-0000-000000000000")
        .await;
    assert!(p.status.is_client_error(), "{}", p.status);

    // Signing out ends the login and the session.
    let login = bob.cookies.get("sb_login").cloned().expect("login cookie");
    let p = bob.post("/lite/logout", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(bob.cookies.is_empty(), "cookies cleared: {:?}", bob.cookies);
    let p = bob.get("/lite").await;
    assert!(p.body.contains("action=\"/lite/login\""));
    bob.cookies.insert("sb_login".into(), login);
    let p = bob.get("/lite").await;
    assert!(
        p.body.contains("action=\"/lite/login\""),
        "the old login is gone"
    );
    alice_ws
        .expect("Bob offline", |v| {
            v["type"] == "presence" && v["from"] == "bob@localhost" && v["show"] == "offline"
        })
        .await;
}

#[tokio::test]
async fn wap_decks_are_small_well_formed_wml() {
    let server = Server::start().await;
    let [alice, _bob] = server.users(["alice", "bob"]).await;
    let mut alice_ws = alice.ws().await;

    let mut bob = Browser::new(&server);
    let p = bob.get("/wap").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_wml(&p);
    assert!(p.body.contains("href=\"/wap/login\""));
    let p = bob
        .post("/wap/login", &[("user", "bob"), ("password", "nope")])
        .await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert_wml(&p);
    bob.sign_in("/wap", "bob").await;
    let csrf = bob.csrf();

    // Bob asks eleven people through the deck's form; Alice asks Bob.
    let mut names = Vec::new();
    for i in 0..11 {
        let name = format!("user{i:02}");
        server.add_user(&name);
        let p = bob
            .post("/wap/contacts", &[("csrf", &csrf), ("address", &name)])
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        assert_eq!(p.location(), "/wap");
        names.push(name);
    }
    let (s, _) = alice
        .post("/api/v1/contacts", json!({"address": "bob"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);

    // Twelve contacts: ten on the first deck, the request first, and a link to more.
    let p = bob.get("/wap").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_wml(&p);
    assert!(p.body.contains("alice@localhost asks:"), "{}", p.body);
    assert!(p.body.contains("href=\"/wap?page=1\""), "{}", p.body);
    assert_eq!(p.body.matches("[asked]").count(), 9, "{}", p.body);
    let p2 = bob.get("/wap?page=1").await;
    assert_wml(&p2);
    assert_eq!(p2.body.matches("[asked]").count(), 2, "{}", p2.body);

    // Accept from the deck.
    let p = bob
        .post(
            "/wap/accept",
            &[("csrf", &csrf), ("address", "alice@localhost")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    alice_ws
        .expect("Bob online", |v| {
            v["type"] == "presence" && v["from"] == "bob@localhost" && v["show"] == "available"
        })
        .await;

    // Open a conversation and read/send in it.
    let p = bob
        .post("/wap/open", &[("csrf", &csrf), ("address", "alice")])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let deck_path = p.location();
    let conversation = deck_path
        .strip_prefix("/wap/c/")
        .expect("a conversation deck")
        .to_string();
    for i in 0..12 {
        let (s, _) = alice
            .send(
                &conversation,
                &format!("w-{i}"),
                &format!("msg {i} $(x) <b>&"),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let p = bob.get(&deck_path).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_wml(&p);
    assert_eq!(p.body.matches("<b>alice@localhost</b>").count(), 10);
    assert!(p.body.contains("msg 11 $$(x) &lt;b&gt;&amp;"), "{}", p.body);
    assert!(!p.body.contains("msg 1 "), "{}", p.body);
    assert!(p.body.contains("?before="), "a link to older messages");
    let client_id = p.field("client_id");
    assert!(
        p.body
            .contains("<postfield name=\"body\" value=\"$(body)\"/>")
    );
    let p = bob
        .post(
            &format!("{deck_path}/send"),
            &[
                ("csrf", &csrf),
                ("client_id", &client_id),
                ("body", "from a phone"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    alice_ws
        .expect("Bob's message", |v| {
            v["type"] == "message" && v["body"] == "from a phone"
        })
        .await;

    // The older deck and an error deck are WML too.
    let p = bob.get(&format!("{deck_path}?before=3")).await;
    assert_wml(&p);
    let p = bob
        .post("/wap/open", &[("csrf", &csrf), ("address", "<not valid>")])
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_wml(&p);
    let p = bob.post("/wap/presence", &[("show", "away")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_wml(&p);
    let p = bob
        .post(
            "/wap/presence",
            &[("csrf", &csrf), ("show", "away"), ("status", "on the bus")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    alice_ws
        .expect("Bob away", |v| {
            v["type"] == "presence" && v["from"] == "bob@localhost" && v["status"] == "on the bus"
        })
        .await;
    let p = bob.get("/wap").await;
    assert_wml(&p);
    assert!(p.body.contains("Me: Away - on the bus"), "{}", p.body);
    let p = bob.post("/wap/logout", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let p = bob.get("/wap").await;
    assert_wml(&p);
    assert!(p.body.contains("href=\"/wap/login\""));
}

/// A `/lite` user and an API (web) user talk both ways in the same conversation.
#[tokio::test]
async fn lite_and_api_users_talk_both_ways() {
    let server = Server::start().await;
    let [alice, bob_api] = server.users(["alice", "bob"]).await;
    alice.befriend(&bob_api).await;
    let conversation = alice.direct(&bob_api).await;
    let mut alice_ws = alice.ws().await;

    let mut bob = Browser::new(&server);
    bob.sign_in("/lite", "bob").await;
    let path = format!("/lite/c/{conversation}");
    let p = bob.get(&path).await;
    assert_eq!(p.status, StatusCode::OK);
    let (csrf, client_id) = (p.field("csrf"), p.field("client_id"));
    let p = bob
        .post(
            &format!("{path}/send"),
            &[("csrf", &csrf), ("client_id", &client_id), ("body", "ping")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let m = alice_ws
        .expect("ping", |v| v["type"] == "message" && v["body"] == "ping")
        .await;
    assert_eq!(m["from"], "bob@localhost", "{m}");
    let (s, _) = alice.send(&conversation, "pong-1", "pong").await;
    assert_eq!(s, StatusCode::CREATED);
    let p = bob.get(&path).await;
    assert!(p.body.contains("pong"), "{}", p.body);
    let value: Value = json!(p.body.contains("ping"));
    assert_eq!(value, json!(true));

    // A cookie login of the JSON API has no page CSRF cookie: the pages ask to sign in.
    let mut web = Browser::new(&server);
    let r = web
        .request(
            web.http
                .post(format!("{}/api/v1/login", server.base))
                .json(&json!({"user": "bob", "password": PASSWORD, "cookie": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(web.cookies.contains_key("sb_login"));
    let p = web.get("/lite").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.body.contains("Please sign in to use these pages."),
        "{}",
        p.body
    );
    let p = web.post("/lite/logout", &[("csrf", "x")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
}
