//! `switchboard serve`: wires the store, the hub, the web line and the admin socket together,
//! and stops them in the right order on SIGINT or SIGTERM.
//!
//! The order of a stop: the lines stop accepting and finish what is in flight (the web line
//! within `http.shutdown_grace`), the admin socket closes, then the hub commits every write
//! still queued and records its sessions. Only then does the process exit, with status 0.

use anyhow::Context;
use switchboard_core::Hub;
use switchboard_core::bus::InProcessBus;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::admin::AdminServer;
use crate::config::Config;
use crate::node::{DataDirLock, open_store, stop_hub};

/// SIGINT and SIGTERM, the two ways to ask for a stop.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Binds the XMPP ports (when the line is on) before anything else starts, so that a port in
/// use is reported at once.
async fn bind_xmpp(config: &Config) -> anyhow::Result<Option<(TcpListener, Option<TcpListener>)>> {
    if !config.xmpp.enabled {
        return Ok(None);
    }
    let listen = config.xmpp.listen;
    let starttls = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (xmpp.listen)"))?;
    let direct = match config.xmpp.tls_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (xmpp.tls_listen)"))?,
        ),
        None => None,
    };
    Ok(Some((starttls, direct)))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    // Handlers first: a signal from here on starts an orderly stop instead of killing.
    let mut signals = StopSignals::install()?;
    let _lock = DataDirLock::try_acquire(&config.data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another switchboard process is using the data directory {} (a server, or a \
             `switchboard user` command that is still running)",
            config.data_dir.display()
        )
    })?;
    if config.auth.scram_iterations < 4096 {
        tracing::warn!(
            iterations = config.auth.scram_iterations,
            "auth.scram_iterations is below 4096, RFC 7677's minimum: fine for tests, weak \
             for real passwords"
        );
    }

    // The port is taken before the store opens, so that a port in use is reported before
    // any migration runs.
    let listen = config.http.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    let local = listener
        .local_addr()
        .context("the listener has no address")?;

    let xmpp_listeners = bind_xmpp(&config).await?;

    let store = open_store(&config).await?;
    let (hub, tasks) = Hub::start(
        config.hub_config(),
        store,
        InProcessBus::new(config.node.clone()),
    );
    let admin = match AdminServer::start(&config.admin_socket(), hub.clone()) {
        Ok(admin) => admin,
        Err(e) => {
            stop_hub(hub, tasks).await;
            return Err(e);
        }
    };

    let (stop_xmpp, mut xmpp_stopping) = watch::channel(false);
    let mut xmpp_routes = axum::Router::new();
    let mut xmpp_line = None;
    if let Some((starttls, direct)) = xmpp_listeners {
        let identity =
            match switchboard_xmpp::tls::load_or_generate(&switchboard_xmpp::tls::TlsSettings {
                certificate: config.xmpp.certificate.clone(),
                private_key: config.xmpp.private_key.clone(),
                data_dir: config.data_dir.clone(),
                hostnames: config
                    .realms
                    .iter()
                    .map(|r| r.as_str().to_string())
                    .collect(),
            }) {
                Ok(identity) => identity,
                Err(e) => {
                    admin.stop().await;
                    stop_hub(hub, tasks).await;
                    return Err(anyhow::anyhow!("{e}"));
                }
            };
        tracing::info!(
            starttls = %starttls.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            direct_tls = %direct.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            certificate = %identity.certificate_path.display(),
            "XMPP clients served"
        );
        let line = switchboard_xmpp::Line::new(hub.clone(), config.xmpp_config(), identity.config);
        xmpp_routes = switchboard_xmpp::http_routes(line.clone());
        xmpp_line = Some(line.clone());
        tokio::spawn(switchboard_xmpp::serve(
            line,
            starttls,
            direct,
            async move {
                let _ = xmpp_stopping.wait_for(|stop| *stop).await;
            },
        ));
    }

    let (stop_web, mut web_stopping) = watch::channel(false);
    let mut web = tokio::spawn(switchboard_web::serve_with(
        listener,
        hub.clone(),
        config.web_config(),
        xmpp_routes,
        async move {
            let _ = web_stopping.wait_for(|stop| *stop).await;
        },
    ));
    let realms: Vec<&str> = config.realms.iter().map(|r| r.as_str()).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %config.node,
        realms = %realms.join(","),
        data_dir = %config.data_dir.display(),
        "switchboard listening on http://{local}"
    );

    // Run until a signal, or until the web line ends on its own (which is a failure).
    let web_ended = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "stopping: no new connections, open requests may finish");
            None
        }
        ended = &mut web => Some(ended),
    };
    let failure = web_ended.map(|ended| match ended {
        Ok(Ok(())) => anyhow::anyhow!("the web line stopped unexpectedly"),
        Ok(Err(e)) => anyhow::Error::new(e).context("the web line failed"),
        Err(e) => anyhow::anyhow!("the web line crashed: {e}"),
    });
    if let Some(e) = &failure {
        tracing::error!(error = %format!("{e:#}"), "stopping");
    }

    let grace = config.http.shutdown_grace;
    let web_running = failure.is_none();
    let stop = async move {
        let _ = stop_xmpp.send(true);
        let _ = stop_web.send(true);
        let web_finished = async {
            if !web_running {
                return;
            }
            match tokio::time::timeout(grace, &mut web).await {
                Ok(Ok(Ok(()))) => tracing::debug!("the web line stopped"),
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the web line failed while stopping"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the web line crashed while stopping"),
                Err(_) => {
                    tracing::warn!(
                        grace_seconds = grace.as_secs_f64(),
                        "open HTTP requests did not finish within http.shutdown_grace; \
                         closing them"
                    );
                    web.abort();
                    let _ = web.await;
                }
            }
        };
        // XMPP streams are told the server stops (system-shutdown) while the hub still runs,
        // so their sessions end in order.
        let xmpp_finished = async {
            if let Some(line) = &xmpp_line {
                line.stop(grace).await;
            }
        };
        tokio::join!(admin.stop(), web_finished, xmpp_finished);
        stop_hub(hub, tasks).await;
    };
    tokio::select! {
        () = stop => {}
        signal = signals.recv() => {
            // The operator insists: leave now. Acknowledged messages are already durable.
            tracing::warn!(signal, "second stop signal: exiting without waiting");
            anyhow::bail!("stopped at once by a second {signal}");
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("switchboard stopped");
            Ok(())
        }
    }
}
