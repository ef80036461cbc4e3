//! The `switchboard` binary from the outside: configuration, `serve`, the `user` commands with
//! and without a running server, and the admin socket between them.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{DEADLINE, PASSWORD, Server, binary};

/// A data directory of its own and the CLI run on it the way an operator would, with no
/// server running.
struct Shell {
    _temp: tempfile::TempDir,
    dir: PathBuf,
}

impl Shell {
    fn new() -> Shell {
        let temp = tempfile::tempdir().expect("a temporary directory");
        Shell {
            dir: temp.path().to_path_buf(),
            _temp: temp,
        }
    }

    /// The binary with only this data directory (and fast password hashing) configured:
    /// nothing from the test runner's environment leaks in.
    fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("SWITCHBOARD_DATA_DIR", &self.dir)
            .env("SWITCHBOARD_AUTH_SCRAM_ITERATIONS", "64");
        cmd
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_with_stdin(self.command().args(args), stdin)
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_stdin(&mut cmd, "")
    }
}

fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // A command that fails before reading its input closes the pipe; that is not an error.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("the binary finishes")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "the command failed ({}): {}{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

#[track_caller]
fn assert_refused(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "the command succeeded: {}",
        stdout(out)
    );
    assert!(
        stderr(out).contains(needle),
        "expected {needle:?} in the error, got: {}",
        stderr(out)
    );
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn user_add_reads_the_password_from_stdin_and_list_shows_the_user() {
    let shell = Shell::new();
    let out = shell.run(&["user", "add", "Alice"], &format!("{PASSWORD}\n"));
    assert_ok(&out);
    assert_eq!(
        stdout(&out).trim(),
        "added alice@localhost",
        "names are normalized"
    );

    let out = shell.run(&["user", "list"], "");
    assert_ok(&out);
    assert_eq!(stdout(&out), "alice@localhost\n");

    let out = shell.run(&["user", "list", "localhost"], "");
    assert_ok(&out);
    assert_eq!(stdout(&out), "alice@localhost\n");
}

#[test]
fn adding_a_user_twice_fails_with_a_clear_message() {
    let shell = Shell::new();
    assert_ok(&shell.run(&["user", "add", "bob"], "a long secret\n"));
    let out = shell.run(&["user", "add", "bob@localhost"], "another secret\n");
    assert_refused(&out, "the user bob@localhost already exists");
}

#[test]
fn bad_names_passwords_and_realms_are_refused_clearly() {
    let shell = Shell::new();
    let out = shell.run(&["user", "add", "al ice"], "a long secret\n");
    assert_refused(&out, "\"al ice\" is not a valid user name");
    let out = shell.run(&["user", "add", "carol"], "short\n");
    assert_refused(&out, "the password must have at least 8 characters");
    let out = shell.run(&["user", "add", "carol"], "");
    assert_refused(&out, "no password on standard input");
    let out = shell.run(
        &["user", "add", "carol@elsewhere.example"],
        "a long secret\n",
    );
    assert_refused(&out, "does not serve the realm");
    let out = shell.run(&["user", "remove", "nobody"], "");
    assert_refused(&out, "there is no user nobody@localhost");
    let out = shell.run(&["user", "passwd", "nobody"], "a long secret\n");
    assert_refused(&out, "there is no user nobody@localhost");
    // Nothing was created by any of that.
    assert_eq!(stdout(&shell.run(&["user", "list"], "")), "");
}

/// `passwd` and `remove` with no server running write the store; a server started afterwards
/// sees the result.
#[tokio::test]
async fn passwd_and_remove_work_without_a_server() {
    let shell = Shell::new();
    assert_ok(&shell.run(&["user", "add", "alice"], "first password\n"));
    assert_ok(&shell.run(&["user", "add", "bob"], "first password\n"));
    let out = shell.run(&["user", "passwd", "alice"], &format!("{PASSWORD}\r\n"));
    assert_ok(&out);
    assert!(stdout(&out).contains("alice@localhost"), "{}", stdout(&out));
    let out = shell.run(&["user", "remove", "bob"], "");
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), "removed bob@localhost");
    assert_eq!(
        stdout(&shell.run(&["user", "list"], "")),
        "alice@localhost\n"
    );

    let server = Server::start_on(shell.dir.clone()).await;
    let login = |user: &str, password: &str| {
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/login", server.base);
        let body = json!({"user": user, "password": password});
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .expect("login")
                .status()
        }
    };
    assert_eq!(
        login("alice", PASSWORD).await,
        StatusCode::OK,
        "the new password works"
    );
    assert_ne!(login("alice", "first password").await, StatusCode::OK);
    assert_ne!(login("bob", "first password").await, StatusCode::OK);
}

#[test]
fn a_bad_config_file_is_refused_naming_the_key() {
    let shell = Shell::new();
    let file = shell.dir.join("switchboard.toml");
    let file_arg = file.to_str().unwrap();

    std::fs::write(&file, "[http]\nlisen = \"127.0.0.1:5280\"\n").unwrap();
    let out = shell.run(&["serve", "--config", file_arg], "");
    assert_refused(&out, "config error: http.lisen: unknown key");
    assert_eq!(out.status.code(), Some(2));

    std::fs::write(&file, "[http]\nlisten = \"abc\"\n").unwrap();
    let out = shell.run(&["serve", "--config", file_arg], "");
    assert_refused(
        &out,
        "config error: http.listen: \"abc\" is not a socket address",
    );

    std::fs::write(&file, "[sessions]\ntimeout = -5\n").unwrap();
    let out = shell.run(&["user", "list", "--config", file_arg], "");
    assert_refused(&out, "config error: sessions.timeout: -5 is not a duration");

    std::fs::write(&file, "[http\n").unwrap();
    let out = shell.run(&["serve", "--config", file_arg], "");
    assert_refused(&out, "TOML parse error at line 1");

    let out = shell.run(&["serve", "--config", "/nonexistent/switchboard.toml"], "");
    assert_refused(&out, "cannot read /nonexistent/switchboard.toml");
}

#[test]
fn a_bad_environment_variable_is_refused_naming_it() {
    let shell = Shell::new();
    let out = shell.run_env(&["serve"], &[("SWITCHBOARD_HTTP_LISTEN", "abc")]);
    assert_refused(
        &out,
        "config error: SWITCHBOARD_HTTP_LISTEN: \"abc\" is not a socket address",
    );
    assert_eq!(out.status.code(), Some(2));
    let out = shell.run_env(
        &["serve"],
        &[("SWITCHBOARD_LIMITS_MESSAGES_PER_SECOND", "fast")],
    );
    assert_refused(
        &out,
        "SWITCHBOARD_LIMITS_MESSAGES_PER_SECOND: \"fast\" is not a number",
    );
    let out = shell.run_env(&["serve"], &[("SWITCHBOARD_HTTP_LISTN", "127.0.0.1:1")]);
    assert_refused(&out, "SWITCHBOARD_HTTP_LISTN: unknown key `listn`");
}

/// Defaults < file < environment, as `switchboard config` shows them.
#[test]
fn the_environment_overrides_the_file_which_overrides_the_defaults() {
    let shell = Shell::new();
    let out = shell.run(&["config"], "");
    assert_ok(&out);
    let defaults: toml::Table = toml::from_str(&stdout(&out)).expect("the output is TOML");
    assert_eq!(defaults["http"]["listen"].as_str(), Some("127.0.0.1:5280"));
    assert_eq!(
        defaults["realms"].as_array().unwrap()[0].as_str(),
        Some("localhost")
    );

    let file = shell.dir.join("switchboard.toml");
    std::fs::write(
        &file,
        "realms = [\"example.org\"]\n[http]\nlisten = \"127.0.0.1:7000\"\n[limits]\nmax_message_bytes = 1000\n",
    )
    .unwrap();
    let out = shell.run_env(
        &["config", "--config", file.to_str().unwrap()],
        &[("SWITCHBOARD_HTTP_LISTEN", "127.0.0.1:6000")],
    );
    assert_ok(&out);
    let merged: toml::Table = toml::from_str(&stdout(&out)).expect("the output is TOML");
    assert_eq!(merged["http"]["listen"].as_str(), Some("127.0.0.1:6000"));
    assert_eq!(
        merged["limits"]["max_message_bytes"].as_integer(),
        Some(1000)
    );
    assert_eq!(
        merged["realms"].as_array().unwrap()[0].as_str(),
        Some("example.org")
    );
}

/// A server started with nothing but a data directory and a port, read from its own output.
struct Bare {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Bare {
    fn start(shell: &Shell, port: u16) -> Bare {
        let mut child = Command::new(binary())
            .env_clear()
            .env("SWITCHBOARD_DATA_DIR", &shell.dir)
            .env("SWITCHBOARD_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "SWITCHBOARD_XMPP_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "SWITCHBOARD_XMPP_TLS_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let (tx, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Bare { child, lines }
    }

    /// Waits for an output line containing `needle`; returns every line seen until then.
    fn wait_for_line(&self, needle: &str) -> Vec<String> {
        let started = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = DEADLINE.saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {needle:?} in time; output: {seen:#?}"),
            }
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the server's status") {
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the server did not stop in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn serve_runs_with_only_a_data_directory_and_a_port() {
    let shell = Shell::new();
    let port = free_port();
    let mut server = Bare::start(&shell, port);
    server.wait_for_line(&format!("switchboard listening on http://127.0.0.1:{port}"));

    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("the server answers HTTP");
    assert_eq!(health.status(), StatusCode::OK);
    let socket = shell.dir.join("admin.sock");
    assert!(
        is_socket(&socket),
        "the admin socket exists while the server runs"
    );
    assert!(
        shell.dir.join("switchboard.db").exists(),
        "SQLite is the default store"
    );

    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM stops the server cleanly: {status}"
    );
    assert!(!socket.exists(), "the admin socket is removed at shutdown");
}

#[tokio::test]
async fn user_commands_go_through_the_running_server() {
    let server = Server::start().await;
    let socket = server.dir.join("admin.sock");
    assert!(
        is_socket(&socket),
        "the running server has its admin socket"
    );
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "only the server's user may use the admin socket"
    );

    // The server holds the data directory, so these can only succeed through the socket.
    let out = server.cli(&["user", "add", "alice"], &format!("{PASSWORD}\n"));
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), "added alice@localhost");
    let out = server.cli(&["user", "add", "alice"], &format!("{PASSWORD}\n"));
    assert_refused(&out, "already exists");
    server.add_user("bob");
    let out = server.cli(&["user", "list"], "");
    assert_eq!(stdout(&out), "alice@localhost\nbob@localhost\n");
    let alice = server.login("alice").await;
    let bob = server.login("bob").await;

    // A new password revokes the old logins and cuts the sessions at once.
    let mut alice_ws = alice.ws().await;
    assert_ok(&server.cli(&["user", "passwd", "alice"], "a brand new password\n"));
    assert!(alice_ws.wait_closed().await, "alice's session was cut");
    let (status, _) = alice.get("/api/v1/me").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "alice's old token was revoked"
    );

    // Removing an account does the same, and it is gone.
    let mut bob_ws = bob.ws().await;
    let (status, _) = bob.get("/api/v1/me").await;
    assert_eq!(status, StatusCode::OK);
    let out = server.cli(&["user", "remove", "bob"], "");
    assert_ok(&out);
    assert!(bob_ws.wait_closed().await, "bob's session was cut");
    let (status, _) = bob.get("/api/v1/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "bob's token was revoked");
    let out = server.cli(&["user", "list"], "");
    assert_eq!(stdout(&out), "alice@localhost\n");
}

#[tokio::test]
async fn the_admin_socket_speaks_one_json_object_per_line() {
    let mut server = Server::start().await;
    server.add_user("alice");
    let socket = server.dir.join("admin.sock");
    let mut stream = UnixStream::connect(&socket).expect("the socket accepts");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("a read timeout");
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ask = |request: &str| -> Value {
        stream.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).expect("an answer");
        serde_json::from_str(&line).expect("a JSON answer")
    };
    assert_eq!(
        ask(r#"{"command":"user_list"}"#),
        json!({"ok": true, "users": ["alice@localhost"]})
    );
    assert_eq!(
        ask(r#"{"command":"user_add","user":"Carol","password":"a long secret"}"#),
        json!({"ok": true, "user": "carol@localhost"})
    );
    let refused = ask(r#"{"command":"user_remove","user":"nobody"}"#);
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["code"], "not_found");
    let bad = ask("not json");
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["code"], "bad_request");

    assert!(server.terminate(), "the server stops cleanly");
    assert!(!socket.exists(), "the admin socket is removed at shutdown");
}

/// A socket left behind by a server that was killed: the CLI writes the store itself, and
/// the next server replaces the socket.
#[tokio::test]
async fn a_stale_admin_socket_is_harmless() {
    let shell = Shell::new();
    let socket = shell.dir.join("admin.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("a socket"));
    assert!(is_socket(&socket));

    assert_ok(&shell.run(&["user", "add", "alice"], &format!("{PASSWORD}\n")));
    let server = Server::start_on(shell.dir.clone()).await;
    assert!(is_socket(&socket));
    let out = server.cli(&["user", "list"], "");
    assert_eq!(stdout(&out), "alice@localhost\n");
    server.login("alice").await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let server = Server::start().await;
    let shell = Shell {
        _temp: tempfile::tempdir().unwrap(),
        dir: server.dir.clone(),
    };
    let port = free_port();
    let out = shell.run_env(
        &["serve"],
        &[("SWITCHBOARD_HTTP_LISTEN", &format!("127.0.0.1:{port}"))],
    );
    assert_refused(
        &out,
        "another switchboard process is using the data directory",
    );
    assert!(
        is_socket(&server.dir.join("admin.sock")),
        "the first server keeps its socket"
    );
}

/// `store.postgres_url` switches the server to PostgreSQL: accounts made through the running
/// server are there after a restart, and nothing is written to the SQLite file.
#[tokio::test]
async fn serve_uses_postgresql_when_configured() {
    let url = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let schema = format!("sbcli_{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("SWITCHBOARD_STORE_POSTGRES_URL", url.as_str()),
        ("SWITCHBOARD_STORE_POSTGRES_SCHEMA", schema.as_str()),
    ];
    let mut server = Server::start_with(&env).await;
    server.add_user("alice");
    assert!(server.terminate(), "the server stops cleanly");
    server.restart().await;
    let out = server.cli(&["user", "list"], "");
    assert_eq!(stdout(&out), "alice@localhost\n");
    server.login("alice").await;
    assert!(
        !server.db_path().exists(),
        "no SQLite file beside PostgreSQL"
    );
    assert!(server.terminate());

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .expect("the test schema is dropped");
}
