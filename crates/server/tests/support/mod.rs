//! Test harness: runs the real `switchboard` binary on a free port with its own data
//! directory, and talks to it the way clients do (HTTP, WebSocket, the CLI).

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const PASSWORD: &str = "correct horse battery";
/// How long any wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub port: u16,
    /// The XMPP client port (STARTTLS) and direct TLS port.
    pub xmpp_port: u16,
    pub xmpp_tls_port: u16,
    pub base: String,
    extra_env: Vec<(String, String)>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let dir = temp.path().to_path_buf();
        let mut server = Server {
            child: None,
            dir,
            _temp: Some(temp),
            port: free_port(),
            xmpp_port: free_port(),
            xmpp_tls_port: free_port(),
            base: String::new(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.base = format!("http://127.0.0.1:{}", server.port);
        server.spawn().await;
        server
    }

    /// Starts a server on an existing data directory, which the caller keeps.
    pub async fn start_on(dir: PathBuf) -> Server {
        let port = free_port();
        let mut server = Server {
            child: None,
            dir,
            _temp: None,
            port,
            xmpp_port: free_port(),
            xmpp_tls_port: free_port(),
            base: format!("http://127.0.0.1:{port}"),
            extra_env: Vec::new(),
        };
        server.spawn().await;
        server
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.env("SWITCHBOARD_DATA_DIR", &self.dir)
            .env(
                "SWITCHBOARD_HTTP_LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .env(
                "SWITCHBOARD_XMPP_LISTEN",
                format!("127.0.0.1:{}", self.xmpp_port),
            )
            .env(
                "SWITCHBOARD_XMPP_TLS_LISTEN",
                format!("127.0.0.1:{}", self.xmpp_tls_port),
            )
            .env("SWITCHBOARD_AUTH_SCRAM_ITERATIONS", "64")
            .env("SWITCHBOARD_LIMITS_MESSAGES_PER_SECOND", "0")
            .env("SWITCHBOARD_LIMITS_LOGIN_ATTEMPTS_PER_MINUTE", "1000")
            .env_remove("RUST_LOG");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    async fn spawn(&mut self) {
        let child = self
            .command()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the switchboard binary starts");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the server exited at start: {status}");
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the server did not answer /healthz in time"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The certificate the server made for XMPP TLS (clients trust it in tests).
    pub fn xmpp_certificate(&self) -> PathBuf {
        self.dir.join("xmpp-tls").join("cert.pem")
    }

    /// Kills the server the hard way (SIGKILL): nothing gets a chance to flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("switchboard.db")
    }

    /// Runs the CLI against this server's data directory.
    pub fn cli(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the CLI starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin takes the password");
        child.wait_with_output().expect("the CLI finishes")
    }

    pub fn add_user(&self, name: &str) {
        let out = self.cli(&["user", "add", name], &format!("{PASSWORD}\n"));
        assert!(
            out.status.success(),
            "user add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn login(&self, name: &str) -> Client {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{}/api/v1/login", self.base))
            .json(&json!({"user": name, "password": PASSWORD}))
            .send()
            .await
            .expect("login request");
        assert_eq!(r.status(), StatusCode::OK, "login of {name}");
        let body: Value = r.json().await.expect("login answer");
        Client {
            http,
            base: self.base.clone(),
            token: body["token"].as_str().expect("a token").to_string(),
            address: body["user"].as_str().expect("an address").to_string(),
        }
    }

    /// Adds users and logs each in.
    pub async fn users<const N: usize>(&self, names: [&str; N]) -> [Client; N] {
        let mut clients = Vec::with_capacity(N);
        for name in names {
            self.add_user(name);
            clients.push(self.login(name).await);
        }
        match clients.try_into() {
            Ok(clients) => clients,
            Err(_) => unreachable!("one client per name"),
        }
    }

    /// Alice and Bob, each in the other's contacts, and their direct conversation.
    pub async fn friends(&self) -> (Client, Client, String) {
        let [alice, bob] = self.users(["alice", "bob"]).await;
        alice.befriend(&bob).await;
        let direct = alice.direct(&bob).await;
        (alice, bob, direct)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub address: String,
}

impl Client {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Sends a contact request to `other`, and `other` accepts it.
    pub async fn befriend(&self, other: &Client) {
        let (s, _) = self
            .post("/api/v1/contacts", json!({"address": other.address}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let (s, b) = other
            .post(
                &format!("/api/v1/contacts/{}/accept", self.address),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "accept: {b}");
    }

    /// The direct conversation with `other`.
    pub async fn direct(&self, other: &Client) -> String {
        let (s, b) = self
            .post("/api/v1/conversations", json!({"with": other.address}))
            .await;
        assert_eq!(s, StatusCode::OK, "open direct conversation: {b}");
        b["id"].as_str().expect("conversation id").to_string()
    }

    pub async fn send(
        &self,
        conversation: &str,
        client_id: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            json!({"client_id": client_id, "body": body}),
        )
        .await
    }

    pub async fn ws(&self) -> Ws {
        self.ws_at("/api/v1/events").await
    }

    pub async fn ws_resume(&self, session: &str, after: i64) -> Ws {
        self.ws_at(&format!("/api/v1/events?session={session}&after={after}"))
            .await
    }

    pub async fn ws_at(&self, path: &str) -> Ws {
        let url = format!("{}{}", self.base.replace("http://", "ws://"), path);
        let mut request = url.into_client_request().expect("a WebSocket request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().expect("a header"),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the WebSocket connects");
        let mut ws = Ws {
            socket,
            session: String::new(),
            position: 0,
        };
        let hello = ws.recv().await.expect("a session frame");
        assert_eq!(hello["type"], "session", "first frame: {hello}");
        ws.session = hello["session"].as_str().expect("session id").to_string();
        ws.position = hello["position"].as_i64().unwrap_or(0);
        ws
    }
}

pub struct Ws {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub session: String,
    /// The highest durable position received.
    pub position: i64,
}

impl Ws {
    /// The next JSON frame, or None when the socket closed or the deadline passed.
    pub async fn recv(&mut self) -> Option<Value> {
        self.recv_within(DEADLINE).await
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match frame.ok()? {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON frames");
                    if let Some(p) = value["position"].as_i64()
                        && value["type"] != "session"
                    {
                        self.position = self.position.max(p);
                    }
                    return Some(value);
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Waits for a frame that satisfies `want`, skipping others; panics at the deadline.
    pub async fn expect(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(v) if want(&v) => return v,
                Some(_) => continue,
                None => panic!("no {what} arrived"),
            }
        }
    }

    /// Collects every frame that arrives until none comes for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.recv_within(quiet).await {
            out.push(v);
        }
        out
    }

    /// Whether the server closes the connection before the deadline.
    pub async fn wait_closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn command(&mut self, value: Value) {
        self.socket
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("the command is sent");
    }

    pub async fn ack(&mut self) {
        let position = self.position;
        self.command(json!({"type": "ack", "position": position}))
            .await;
    }

    /// Closes the TCP connection without a WebSocket close handshake (a dropped network).
    pub fn drop_connection(self) {
        drop(self.socket);
    }
}

/// Whether any value in any table of the SQLite store contains `needle` (as text or bytes).
/// Reads through SQLite itself, so rows still in the write-ahead log count too.
pub fn store_contains(path: &Path, needle: &[u8]) -> bool {
    use rusqlite::types::ValueRef;
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("the store opens");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("table names");
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for table in tables {
        let mut stmt = db
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .expect("a select");
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("a row") {
            for i in 0..columns {
                let found = match row.get_ref(i).expect("a value") {
                    ValueRef::Text(t) | ValueRef::Blob(t) => contains(t),
                    _ => false,
                };
                if found {
                    return true;
                }
            }
        }
    }
    false
}
