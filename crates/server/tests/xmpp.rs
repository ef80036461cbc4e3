//! The XMPP line, tested with a real XMPP library written by others: slixmpp drives each
//! scenario of `tests/xmpp/scenarios.py` against the real binary (accounts made with the
//! CLI). `scripts/test` installs slixmpp into `target/xmpp-venv`; `SWITCHBOARD_TEST_PYTHON`
//! can name another interpreter that has it.
//!
//! The stream limits are tested here directly on a socket: what a misbehaving client sends
//! is exactly what a library would never send.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{DEADLINE, PASSWORD, Server};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let python = std::env::var_os("SWITCHBOARD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/xmpp-venv/bin/python"));
    assert!(
        python.exists(),
        "no Python with slixmpp at {}: run ./scripts/test (it creates target/xmpp-venv), or set \
         SWITCHBOARD_TEST_PYTHON",
        python.display()
    );
    python
}

/// The command that runs one scenario against `server` as alice and bob.
fn scenario_command(server: &Server, name: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(workspace().join("tests/xmpp/scenarios.py"))
        .arg(name)
        .args(["--host", "127.0.0.1", "--domain", "localhost"])
        .args(["--port", &server.xmpp_port.to_string()])
        .arg("--ca")
        .arg(server.xmpp_certificate())
        .args(["--user", &format!("alice:{PASSWORD}")])
        .args(["--user", &format!("bob:{PASSWORD}")])
        .args(["--http", &server.base])
        .args(["--tls-port", &server.xmpp_tls_port.to_string()])
        .args(["--timeout", &DEADLINE.as_secs().to_string()]);
    cmd
}

/// Runs one scenario against a fresh server with two fresh accounts, alice and bob.
async fn scenario(name: &str) {
    let server = Server::start().await;
    server.add_user("alice");
    server.add_user("bob");
    let mut cmd = scenario_command(&server, name);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the scenario runs")
        .expect("python starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {name} failed ({}):\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("PASS {name}")),
        "scenario {name} did not report a pass:\n{stderr}"
    );
}

#[tokio::test]
async fn login_over_starttls_with_scram_sha_256_and_sha_1() {
    scenario("login").await;
}

#[tokio::test]
async fn a_web_group_is_a_room_for_xmpp_clients() {
    scenario("rooms").await;
}

#[tokio::test]
async fn an_inactive_client_gets_messages_but_no_presence_churn() {
    scenario("csi").await;
}

#[tokio::test]
async fn receipts_markers_blocking_vcard_and_directed_presence() {
    scenario("extras").await;
}

#[tokio::test]
async fn login_over_direct_tls() {
    scenario("direct_tls").await;
}

#[tokio::test]
async fn contacts_subscribe_see_presence_and_chat() {
    scenario("contacts").await;
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_nothing_lost_or_doubled() {
    scenario("resume").await;
}

#[tokio::test]
async fn history_pages_through_the_message_archive() {
    scenario("mam").await;
}

#[tokio::test]
async fn a_second_resource_gets_carbons() {
    scenario("carbons").await;
}

#[tokio::test]
async fn a_web_user_and_an_xmpp_user_talk_and_see_each_other() {
    scenario("web").await;
}

#[tokio::test]
async fn a_resumption_takes_over_a_connection_that_still_looks_alive() {
    scenario("takeover").await;
}

#[tokio::test]
async fn iqs_to_a_full_address_reach_that_client_between_contacts_only() {
    scenario("iq").await;
}

#[tokio::test]
async fn unacknowledged_messages_reach_the_next_session() {
    scenario("unacked").await;
}

#[tokio::test]
async fn personal_eventing_publishes_to_contacts_only() {
    scenario("pep").await;
}

#[tokio::test]
async fn a_stopping_server_closes_streams_with_system_shutdown() {
    use std::io::BufRead;
    let mut server = Server::start().await;
    server.add_user("alice");
    server.add_user("bob");
    let mut child = scenario_command(&server, "shutdown")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    // The scenario says when its session is up; its own deadline bounds this wait.
    for line in lines.by_ref() {
        let line = line.expect("the scenario's output");
        seen.push(line.clone());
        if line.contains("shutdown: ready") {
            break;
        }
        assert!(!line.contains("FAIL"), "{}", seen.join("\n"));
    }
    assert!(server.terminate(), "the server did not stop cleanly");
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().expect("the scenario ends");
    assert!(
        status.success() && seen.iter().any(|l| l.contains("PASS shutdown")),
        "{}",
        seen.join("\n")
    );
}

// ---- stream limits, on a raw socket ----

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// Sends `data` on a fresh connection and reads until the server closes it; returns what the
/// server sent.
fn exchange(server: &Server, data: &[u8]) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", server.xmpp_port)).expect("connect");
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    // The server may close before reading everything; a failed write is fine then.
    let _ = tcp.write_all(data);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the server did not close the stream in time: {e}; got {}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_stream_error(answer: &str, condition: &str) {
    assert!(
        answer.contains(&format!(
            "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        )),
        "expected the stream error {condition}; got {answer}"
    );
    assert!(
        answer.trim_end().ends_with("</stream:stream>"),
        "the stream was not closed: {answer}"
    );
}

#[tokio::test]
async fn malformed_and_oversized_streams_get_stream_errors_and_others_go_on() {
    let server = Server::start_with(&[("SWITCHBOARD_XMPP_MAX_STANZA_BYTES", "8192")]).await;
    // A second, well-behaved client keeps its stream while the others misbehave.
    let mut good = TcpStream::connect(("127.0.0.1", server.xmpp_port)).expect("connect");
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    good.write_all(HEADER.as_bytes()).unwrap();

    let dtd = format!(
        "<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY boom 'boom'>]>{}",
        &HEADER["<?xml version='1.0'?>".len()..]
    );
    assert_stream_error(&exchange(&server, dtd.as_bytes()), "restricted-xml");

    let big = format!(
        "{HEADER}<message><body>{}</body></message>",
        "x".repeat(16 * 1024)
    );
    assert_stream_error(&exchange(&server, big.as_bytes()), "policy-violation");

    let deep = format!("{HEADER}<message>{}", "<a>".repeat(200));
    assert_stream_error(&exchange(&server, deep.as_bytes()), "policy-violation");

    let broken = format!("{HEADER}<message><body></message>");
    assert_stream_error(&exchange(&server, broken.as_bytes()), "not-well-formed");

    let wrong_ns = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:server' \
                    xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    assert_stream_error(&exchange(&server, wrong_ns.as_bytes()), "invalid-namespace");

    let unknown_host = HEADER.replace("to='localhost'", "to='example.org'");
    assert_stream_error(&exchange(&server, unknown_host.as_bytes()), "host-unknown");

    // Before TLS, nothing but STARTTLS is allowed.
    let no_tls = format!(
        "{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHg=</auth>"
    );
    assert_stream_error(&exchange(&server, no_tls.as_bytes()), "policy-violation");

    // The well-behaved stream got its features (STARTTLS required) and is still open.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("</stream:features>") {
        let n = good.read(&mut buf).expect("the good stream's features");
        assert!(n > 0, "the good stream was closed");
        got.extend_from_slice(&buf[..n]);
    }
    let features = String::from_utf8_lossy(&got);
    assert!(
        features
            .contains("<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></starttls>"),
        "{features}"
    );
    good.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .unwrap();
    let n = good
        .read(&mut buf)
        .expect("the good stream answers STARTTLS");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("<proceed"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}
