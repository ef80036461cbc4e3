//! The benchmark runner. It starts a release `switchboard` server pinned to one core, drives it
//! from this process (run it pinned to the other core: `scripts/bench` does), and prints the
//! figures the README reports:
//!
//! - `throughput`: durable messages per second through one node (history on), 100-byte
//!   messages between fixed pairs of users over WebSocket, offered rate stepped up; one-way
//!   latency (send to delivery) measured here, percentiles per step.
//! - `idle`: server memory per idle authenticated WebSocket session (RSS delta over N
//!   sessions).
//! - `xmpp-idle`: the same for XMPP sessions over STARTTLS (logged in with SCRAM-SHA-256,
//!   resource bound, initial presence sent).
//! - `xmpp-logins`: complete STARTTLS + SCRAM-SHA-256 + bind logins per second.
//! - `xmpp-throughput`: `throughput` with XMPP clients.

mod xmpp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_core::bus::InProcessBus;
use switchboard_core::credentials::HashCost;
use switchboard_core::model::MessagePolicy;
use switchboard_core::{Address, Hub, HubConfig, Realm};
use switchboard_store::{SqliteOptions, SqliteStore};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PASSWORD: &str = "benchmark password";

#[derive(Parser)]
#[command(about = "Switchboard benchmarks")]
struct Cli {
    /// The server binary to benchmark.
    #[arg(long, default_value = "target/release/switchboard")]
    server: PathBuf,
    /// The CPUs the server is pinned to (a taskset list: `0`, or `0,1` to diagnose).
    #[arg(long, default_value = "0")]
    server_cpu: String,
    #[command(subcommand)]
    command: Bench,
}

/// A throughput run: the load and the offered rates it steps through.
#[derive(clap::Args)]
struct Steps {
    /// Pairs of users; one of each pair sends to the other.
    #[arg(long, default_value_t = 500)]
    pairs: usize,
    /// Offered rates to step through, messages per second in total.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5000,10000,15000,20000,25000,30000"
    )]
    rates: Vec<u64>,
    /// Seconds per step.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[derive(Subcommand)]
enum Bench {
    /// Durable messages per second and one-way latency, offered rate stepped up.
    Throughput(Steps),
    /// Server memory per idle authenticated WebSocket session.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
    },
    /// The same as `throughput`, with XMPP clients over STARTTLS.
    XmppThroughput(Steps),
    /// Server memory per idle XMPP session over STARTTLS.
    XmppIdle {
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
    },
    /// STARTTLS + SCRAM-SHA-256 logins per second (each one a new connection, bound and
    /// online, then closed).
    XmppLogins {
        #[arg(long, default_value_t = 5_000)]
        logins: usize,
        /// Logins in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Bench::Throughput(ref s) => throughput(&cli, s.pairs, &s.rates, s.seconds).await,
        Bench::Idle { sessions } => idle(&cli, sessions).await,
        Bench::XmppIdle { sessions } => xmpp_idle(&cli, sessions).await,
        Bench::XmppThroughput(ref s) => xmpp_throughput(&cli, s.pairs, &s.rates, s.seconds).await,
        Bench::XmppLogins {
            logins,
            concurrency,
        } => xmpp_logins(&cli, logins, concurrency).await,
    }
}

/// Creates accounts straight in a fresh store, before the server starts: thousands of CLI
/// runs would take minutes. Accounts accept conversations from anyone so that pairs need no
/// contact requests.
async fn create_users(dir: &Path, names: &[String]) -> Result<()> {
    let store = SqliteStore::open(&dir.join("switchboard.db"), SqliteOptions::default())
        .context("opening the store")?;
    let config = HubConfig {
        hash_cost: HashCost { iterations: 64 },
        default_message_policy: MessagePolicy::Anyone,
        ..HubConfig::default()
    };
    let (hub, tasks) = Hub::start(config, Arc::new(store), InProcessBus::new("bench"));
    let realm = Realm::parse("localhost")?;
    for name in names {
        hub.add_user(&Address::new(name, &realm)?, PASSWORD).await?;
    }
    tasks.shutdown(hub).await;
    Ok(())
}

struct Server {
    child: Child,
    base: String,
    /// The XMPP client port, when the XMPP line runs.
    xmpp: Option<std::net::SocketAddr>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    async fn start(cli: &Cli, dir: &Path) -> Result<Server> {
        Server::start_with(cli, dir, false).await
    }

    async fn start_with(cli: &Cli, dir: &Path, xmpp: bool) -> Result<Server> {
        let port = free_port()?;
        let xmpp = match xmpp {
            true => Some(std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?))),
            false => None,
        };
        let child = Command::new("taskset")
            .arg("-c")
            .arg(&cli.server_cpu)
            .arg(&cli.server)
            .arg("serve")
            .env("SWITCHBOARD_DATA_DIR", dir)
            .env("SWITCHBOARD_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD_HTTP_CONNECTIONS_PER_IP", "0")
            .env("SWITCHBOARD_XMPP_ENABLED", xmpp.is_some().to_string())
            .envs(xmpp.map(|a| ("SWITCHBOARD_XMPP_LISTEN", a.to_string())))
            .env("SWITCHBOARD_XMPP_TLS_LISTEN", "")
            .env("SWITCHBOARD_XMPP_CONNECTIONS_PER_IP", "0")
            .env("SWITCHBOARD_XMPP_STANZAS_PER_SECOND", "0")
            .env("SWITCHBOARD_LIMITS_MESSAGES_PER_SECOND", "0")
            .env("SWITCHBOARD_LIMITS_LOGIN_ATTEMPTS_PER_MINUTE", "10000000")
            .env("SWITCHBOARD_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", cli.server.display()))?;
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            xmpp,
        };
        let started = Instant::now();
        while reqwest::get(format!("{}/healthz", server.base))
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the server did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    }

    async fn login(&self, http: &reqwest::Client, name: &str) -> Result<String> {
        let r: Value = http
            .post(format!("{}/api/v1/login", self.base))
            .json(&json!({"user": name, "password": PASSWORD}))
            .send()
            .await?
            .json()
            .await?;
        Ok(r["token"].as_str().context("no token")?.to_string())
    }

    async fn metric(&self, name: &str) -> Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .with_context(|| format!("no metric {name}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, token: &str) -> Result<Socket> {
    let mut request =
        format!("{}/api/v1/events", base.replace("http://", "ws://")).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    // Without TCP_NODELAY, Nagle and delayed ACKs add tens of milliseconds to small frames.
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
    // The first frame names the session.
    socket.next().await.context("no session frame")??;
    Ok(socket)
}

async fn login_all(server: &Server, names: &[String]) -> Result<Vec<String>> {
    let http = reqwest::Client::new();
    let mut tokens = Vec::with_capacity(names.len());
    for chunk in names.chunks(64) {
        let logins = chunk.iter().map(|n| server.login(&http, n));
        for token in futures_util::future::join_all(logins).await {
            tokens.push(token?);
        }
    }
    Ok(tokens)
}

/// Waits until the server holds all `sessions` (plus the baseline one) and has settled, then
/// prints the memory each one takes.
async fn report_idle(server: &Server, sessions: usize, before: u64, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metric("switchboard_sessions").await? < (sessions + 1) as f64 {
        if Instant::now() > deadline {
            bail!("the server did not hold every session");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settling: allocations that follow a login (presence fan-out, stored records) finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib()?;
    let per_session = (after.saturating_sub(before)) as f64 * 1024.0 / sessions as f64;
    println!(
        "idle sessions: {sessions}; server RSS {before} KiB -> {after} KiB; {:.0} bytes ({:.1} KiB) per idle {what}",
        per_session,
        per_session / 1024.0
    );
    Ok(())
}

async fn idle(cli: &Cli, sessions: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (0..=sessions).map(|i| format!("idle{i}")).collect();
    create_users(dir.path(), &names).await?;
    let server = Server::start(cli, dir.path()).await?;
    let tokens = login_all(&server, &names).await?;
    // One session first, so that everything allocated once is in the baseline.
    let first = connect(&server.base, &tokens[0]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib()?;
    let mut sockets = Vec::with_capacity(sessions);
    for chunk in tokens[1..].chunks(100) {
        for socket in
            futures_util::future::join_all(chunk.iter().map(|t| connect(&server.base, t))).await
        {
            sockets.push(socket?);
        }
    }
    report_idle(&server, sessions, before, "authenticated WebSocket session").await?;
    drop(first);
    drop(sockets);
    Ok(())
}

async fn xmpp_idle(cli: &Cli, sessions: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (0..=sessions).map(|i| format!("idle{i}")).collect();
    create_users(dir.path(), &names).await?;
    let server = Server::start_with(cli, dir.path(), true).await?;
    let addr = server.xmpp.context("the XMPP line is off")?;
    let tls = xmpp::tls_config(&dir.path().join("xmpp-tls/cert.pem"))?;
    let salts = xmpp::SaltCache::default();
    // One session first, so that everything allocated once is in the baseline.
    let first = xmpp::login(addr, &tls, &salts, &names[0], PASSWORD).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib()?;
    let mut clients = Vec::with_capacity(sessions);
    for chunk in names[1..].chunks(100) {
        let logins = chunk
            .iter()
            .map(|name| xmpp::login(addr, &tls, &salts, name, PASSWORD));
        for client in futures_util::future::join_all(logins).await {
            clients.push(client?);
        }
    }
    report_idle(&server, sessions, before, "XMPP session over STARTTLS").await?;
    drop(first);
    drop(clients);
    Ok(())
}

async fn xmpp_logins(cli: &Cli, logins: usize, concurrency: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let users = concurrency.max(1);
    let names: Vec<String> = (0..users).map(|i| format!("login{i}")).collect();
    create_users(dir.path(), &names).await?;
    let server = Server::start_with(cli, dir.path(), true).await?;
    let addr = server.xmpp.context("the XMPP line is off")?;
    let tls = xmpp::tls_config(&dir.path().join("xmpp-tls/cert.pem"))?;
    let salts = Arc::new(xmpp::SaltCache::default());
    // Warm the client's salt cache, so the figure is the server's work.
    for name in &names {
        drop(xmpp::login(addr, &tls, &salts, name, PASSWORD).await?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = names
        .iter()
        .map(|name| {
            let (tls, salts, done, name) = (tls.clone(), salts.clone(), done.clone(), name.clone());
            tokio::spawn(async move {
                while done.fetch_add(1, Ordering::Relaxed) < logins as u64 {
                    drop(xmpp::login(addr, &tls, &salts, &name, PASSWORD).await?);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "XMPP logins (STARTTLS, SCRAM-SHA-256, bind, presence): {logins} in {seconds:.2} s = {:.0} per second, {concurrency} at a time",
        logins as f64 / seconds
    );
    Ok(())
}

async fn xmpp_throughput(cli: &Cli, pairs: usize, rates: &[u64], seconds: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (0..pairs * 2).map(|i| format!("u{i}")).collect();
    create_users(dir.path(), &names).await?;
    let server = Server::start_with(cli, dir.path(), true).await?;
    let addr = server.xmpp.context("the XMPP line is off")?;
    let tls = xmpp::tls_config(&dir.path().join("xmpp-tls/cert.pem"))?;
    let salts = xmpp::SaltCache::default();
    let load = Load::new(pairs);
    let mut senders = Vec::with_capacity(pairs);
    for p in 0..pairs {
        let receiver = xmpp::login(addr, &tls, &salts, &names[2 * p + 1], PASSWORD).await?;
        let sender = xmpp::login(addr, &tls, &salts, &names[2 * p], PASSWORD).await?;
        tokio::spawn(xmpp_receive(
            receiver,
            load.start,
            load.step.clone(),
            load.received.clone(),
        ));
        senders.push(sender);
    }
    for (i, sender) in senders.into_iter().enumerate() {
        let to = format!("{}@localhost", names[2 * i + 1]);
        tokio::spawn(xmpp_send(
            sender,
            to,
            i,
            Pacer::new(load.rate_per_sender.clone(), i as f64 / pairs as f64),
            load.start,
            load.sent.clone(),
            load.acked.clone(),
        ));
    }
    run_steps(&server, &load, rates, seconds, "XMPP (STARTTLS)").await
}

/// Sends chat messages at the paced rate. Stream management counts what the server took:
/// it handles a client's stanzas in order and a message only once it is stored, so its
/// answer `<a h='n'/>` to every 8th message's `<r/>` says n are durable.
async fn xmpp_send(
    mut client: xmpp::Client,
    to: String,
    index: usize,
    mut pacer: Pacer,
    start: Instant,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
) -> Result<()> {
    xmpp::write(&mut client.tls, "<enable xmlns='urn:xmpp:sm:3'/>").await?;
    while client.reader.stanza(&mut client.tls).await?.name() != "enabled" {}
    let (mut rx, mut tx) = tokio::io::split(client.tls);
    let mut reader = client.reader;
    tokio::spawn(async move {
        let mut counted = 0u64;
        while let Ok(el) = reader.stanza(&mut rx).await {
            if el.name() == "a"
                && let Some(h) = el.attr("h").and_then(|h| h.parse::<u64>().ok())
            {
                acked.fetch_add(h.saturating_sub(counted), Ordering::Relaxed);
                counted = counted.max(h);
            }
        }
    });
    let mut n = 0u64;
    loop {
        pacer.wait().await;
        n += 1;
        let mut stanza = format!(
            "<message to='{to}' type='chat' id='{index}-{n}'><body>{}</body></message>",
            timed_body(start)
        );
        if n.is_multiple_of(8) {
            stanza.push_str("<r xmlns='urn:xmpp:sm:3'/>");
        }
        xmpp::write(&mut tx, &stanza).await?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

async fn xmpp_receive(
    mut client: xmpp::Client,
    start: Instant,
    step: Arc<Mutex<Step>>,
    received: Arc<AtomicU64>,
) -> Result<()> {
    loop {
        let el = client.reader.stanza(&mut client.tls).await?;
        if el.name() != "message" {
            continue;
        }
        let Some(body) = el.children().find(|c| c.name() == "body").map(|b| b.text()) else {
            continue;
        };
        if let Some(latency) = latency_of(&body, start) {
            record_latency(&step, &received, latency, start).await;
        }
    }
}

/// Latencies in microseconds, per step.
#[derive(Default)]
struct Step {
    latencies: Vec<u32>,
}

fn now_us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

async fn throughput(cli: &Cli, pairs: usize, rates: &[u64], seconds: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (0..pairs * 2).map(|i| format!("u{i}")).collect();
    create_users(dir.path(), &names).await?;
    let server = Server::start(cli, dir.path()).await?;
    let tokens = login_all(&server, &names).await?;
    let http = reqwest::Client::new();
    let Load {
        start,
        step,
        received,
        sent,
        acked,
        rate_per_sender,
        ..
    } = Load::new(pairs);
    let mut senders = Vec::new();
    for p in 0..pairs {
        let (a, b) = (&tokens[2 * p], &tokens[2 * p + 1]);
        let conv: Value = http
            .post(format!("{}/api/v1/conversations", server.base))
            .bearer_auth(a)
            .json(&json!({"with": names[2 * p + 1]}))
            .send()
            .await?
            .json()
            .await?;
        let conv = conv["id"].as_str().context("no conversation")?.to_string();
        let receiver = connect(&server.base, b).await?;
        let sender = connect(&server.base, a).await?;
        tokio::spawn(receive(receiver, start, step.clone(), received.clone()));
        senders.push((sender, conv));
    }
    for (i, (socket, conv)) in senders.into_iter().enumerate() {
        tokio::spawn(send(
            socket,
            conv,
            i,
            i as f64 / pairs as f64,
            start,
            rate_per_sender.clone(),
            sent.clone(),
            acked.clone(),
        ));
    }
    let load = Load {
        pairs,
        start,
        step,
        received,
        sent,
        acked,
        rate_per_sender,
    };
    run_steps(&server, &load, rates, seconds, "WebSocket").await
}

/// The counters a load's senders and receivers update, and the rate they are told.
struct Load {
    pairs: usize,
    start: Instant,
    step: Arc<Mutex<Step>>,
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    /// Per sender, in milli-messages per second, so that slow rates still pace.
    rate_per_sender: Arc<AtomicU64>,
}

impl Load {
    fn new(pairs: usize) -> Load {
        Load {
            pairs,
            start: Instant::now(),
            step: Arc::new(Mutex::new(Step::default())),
            received: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
            acked: Arc::new(AtomicU64::new(0)),
            rate_per_sender: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Steps the offered rate up and prints what was stored and delivered, and the latency,
/// until delivery falls behind.
async fn run_steps(
    server: &Server,
    load: &Load,
    rates: &[u64],
    seconds: u64,
    over: &str,
) -> Result<()> {
    let Load {
        pairs,
        start,
        ref step,
        ref received,
        ref sent,
        ref acked,
        ref rate_per_sender,
    } = *load;
    if std::env::var_os("BENCH_TRACE").is_some() {
        // Reports stalls of this process itself, to tell them from the server's.
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let gap = last.elapsed();
                if gap > Duration::from_millis(20) {
                    eprintln!(
                        "generator stalled {} ms at {} ms",
                        gap.as_millis(),
                        now_us(start) / 1000
                    );
                }
                last = Instant::now();
            }
        });
    }
    println!(
        "pairs: {pairs} over {over}; message body: 100 bytes; history on (SQLite, WAL); step: {seconds} s"
    );
    println!(
        "{:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "offered/s", "stored/s", "delivered/s", "p50 ms", "p99 ms", "max ms"
    );
    for &rate in rates {
        // Rates are per sender in milli-messages per second so that slow rates still pace.
        rate_per_sender.store(rate * 1000 / pairs as u64, Ordering::Relaxed);
        let (s0, a0, r0) = (
            sent.load(Ordering::Relaxed),
            acked.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        );
        let commits0 = server
            .metric("switchboard_store_commit_seconds_count")
            .await?;
        let commit_time0 = server
            .metric("switchboard_store_commit_seconds_sum")
            .await?;
        step.lock().await.latencies.clear();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (s1, a1, r1) = (
            sent.load(Ordering::Relaxed),
            acked.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        );
        let commits = server
            .metric("switchboard_store_commit_seconds_count")
            .await?
            - commits0;
        let commit_time = server
            .metric("switchboard_store_commit_seconds_sum")
            .await?
            - commit_time0;
        let mut lat = std::mem::take(&mut step.lock().await.latencies);
        lat.sort_unstable();
        let pct = |q: f64| {
            lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let secs = seconds as f64;
        println!(
            "{:>10} {:>10.0} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.0} {:>9.3}",
            rate,
            (a1 - a0) as f64 / secs,
            (r1 - r0) as f64 / secs,
            pct(0.5),
            pct(0.99),
            lat.last().copied().unwrap_or(0) as f64 / 1000.0,
            (a1 - a0) as f64 / commits.max(1.0),
            commit_time * 1000.0 / commits.max(1.0),
        );
        // Behind: the server delivered clearly less than was sent in the step.
        if ((r1 - r0) as f64) < 0.97 * (s1 - s0) as f64 {
            println!("delivery fell behind the offered rate; stopping");
            break;
        }
    }
    rate_per_sender.store(0, Ordering::Relaxed);
    Ok(())
}

/// Paces one sender at the rate it is told; idle while the rate is 0.
struct Pacer {
    rate_milli: Arc<AtomicU64>,
    /// Where in the period this sender fires, 0..1.
    phase: f64,
    next: tokio::time::Instant,
    paced: bool,
}

impl Pacer {
    fn new(rate_milli: Arc<AtomicU64>, phase: f64) -> Pacer {
        Pacer {
            rate_milli,
            phase,
            next: tokio::time::Instant::now(),
            paced: false,
        }
    }

    /// Waits until the next message is due.
    async fn wait(&mut self) {
        loop {
            let rate = self.rate_milli.load(Ordering::Relaxed);
            if rate == 0 {
                // Between runs: poll for a rate to be set.
                tokio::time::sleep(Duration::from_millis(10)).await;
                self.paced = false;
                continue;
            }
            let period = Duration::from_micros(1_000_000_000 / rate);
            if !self.paced {
                // Senders start spread over one period: in step they would all fire at once,
                // a burst every period that measures queueing in the burst, not the server.
                self.paced = true;
                self.next = tokio::time::Instant::now() + period.mul_f64(self.phase);
            }
            self.next += period;
            tokio::time::sleep_until(self.next).await;
            return;
        }
    }
}

/// The send time in microseconds, padded to a 100-byte body: receivers measure one-way
/// latency from it.
fn timed_body(start: Instant) -> String {
    format!("{:020}:{:079}", now_us(start), 0)
}

fn latency_of(body: &str, start: Instant) -> Option<u64> {
    let sent_us = body.get(..20)?.parse::<u64>().ok()?;
    Some(now_us(start).saturating_sub(sent_us))
}

#[allow(clippy::too_many_arguments)]
async fn send(
    socket: Socket,
    conversation: String,
    index: usize,
    phase: f64,
    start: Instant,
    rate_milli: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
) {
    let (mut tx, mut rx) = socket.split();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = rx.next().await {
            if let Message::Text(text) = frame
                && text.contains("\"type\":\"sent\"")
            {
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut n = 0u64;
    let mut pacer = Pacer::new(rate_milli, phase);
    loop {
        pacer.wait().await;
        n += 1;
        let body = timed_body(start);
        let frame = json!({
            "type": "send",
            "conversation": conversation,
            "client_id": format!("{index}-{n}"),
            "body": body,
        });
        if tx
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

async fn record_latency(step: &Mutex<Step>, received: &AtomicU64, latency: u64, start: Instant) {
    if std::env::var_os("BENCH_TRACE").is_some() && latency > 20_000 {
        eprintln!("slow {} ms at {} ms", latency / 1000, now_us(start) / 1000);
    }
    step.lock()
        .await
        .latencies
        .push(latency.min(u32::MAX as u64) as u32);
    received.fetch_add(1, Ordering::Relaxed);
}

async fn receive(socket: Socket, start: Instant, step: Arc<Mutex<Step>>, received: Arc<AtomicU64>) {
    let (mut tx, mut rx) = socket.split();
    let mut since_ack = 0;
    while let Some(Ok(frame)) = rx.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if v["type"] != "message" {
            continue;
        }
        let Some(latency) = v["body"].as_str().and_then(|b| latency_of(b, start)) else {
            continue;
        };
        record_latency(&step, &received, latency, start).await;
        since_ack += 1;
        if since_ack >= 64 {
            since_ack = 0;
            let ack = json!({"type": "ack", "position": v["position"]});
            if tx
                .send(Message::Text(ack.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
