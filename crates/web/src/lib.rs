//! The web line: a versioned HTTP JSON API, a WebSocket event stream and an HTTP long-poll
//! carrying the same events, login by password with bearer tokens or browser cookies.
//!
//! Architecture invariant: this crate talks only to the hub (`switchboard_core::Hub`); it
//! never touches storage and never calls another line.

mod api;
mod auth;
mod error;
mod events;
mod extract;
mod listener;
mod messenger;
mod thin;
mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use switchboard_core::Hub;
use tokio::net::TcpListener;

pub use error::{ApiError, ApiResult};

/// Settings of the web line. Every limit can be raised for benchmarks.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most simultaneous connections from one client address (0 = unlimited).
    pub connections_per_ip: usize,
    /// How long a long-poll request waits for an event before answering empty.
    pub long_poll_timeout: Duration,
    /// How often the server pings an idle WebSocket.
    pub ws_ping_interval: Duration,
    /// Whether login cookies get the `Secure` attribute (set when served over HTTPS).
    pub secure_cookies: bool,
    /// Origins allowed to use cookie-authenticated WebSocket and long-poll requests, in
    /// addition to the server's own origin.
    pub allowed_origins: Vec<String>,
    /// Whether to take the client address from `X-Forwarded-For` (only behind a trusted
    /// reverse proxy).
    pub trust_forwarded_for: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            max_body_bytes: 256 * 1024,
            connections_per_ip: 256,
            long_poll_timeout: Duration::from_secs(25),
            ws_ping_interval: Duration::from_secs(30),
            secure_cookies: false,
            allowed_origins: Vec::new(),
            trust_forwarded_for: false,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub config: Arc<WebConfig>,
}

/// The OpenAPI document describing this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The web line's routes.
pub fn router(hub: Hub, config: WebConfig) -> Router {
    let body_limit = config.max_body_bytes;
    let state = AppState {
        hub,
        config: Arc::new(config),
    };
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/login", post(api::login))
        .route("/register", post(api::register))
        .route(
            "/admin/users",
            get(api::admin_users).post(api::admin_add_user),
        )
        .route("/admin/users/{address}", delete(api::admin_remove_user))
        .route(
            "/admin/users/{address}/password",
            put(api::admin_set_password),
        )
        .route("/logout", post(api::logout))
        .route("/me", get(api::me))
        .route("/me/settings", put(api::update_settings))
        .route("/me/password", post(api::change_password))
        .route("/logins", get(api::logins))
        .route("/logins/{id}", delete(api::revoke_login))
        .route("/contacts", get(api::contacts).post(api::request_contact))
        .route(
            "/contacts/{address}",
            axum::routing::patch(api::update_contact).delete(api::remove_contact),
        )
        .route("/contacts/{address}/accept", post(api::accept_contact))
        .route("/contacts/{address}/refuse", post(api::refuse_contact))
        .route("/blocks", get(api::blocks).post(api::block))
        .route("/blocks/{address}", delete(api::unblock))
        .route(
            "/conversations",
            get(api::conversations).post(api::create_conversation),
        )
        .route("/conversations/{id}", get(api::conversation))
        .route(
            "/conversations/{id}/messages",
            get(api::history).post(api::send),
        )
        .route("/conversations/{id}/read", post(api::mark_read))
        .route("/conversations/{id}/typing", post(api::typing))
        .route(
            "/sessions",
            get(events::sessions).post(events::open_session),
        )
        .route("/sessions/{id}", delete(events::close_session))
        .route("/sessions/{id}/presence", put(events::set_presence))
        .route("/sessions/{id}/events", get(events::poll))
        .route("/events", get(events::websocket))
        .fallback(api::fallback);
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .merge(thin::routes())
        .merge(messenger::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.hub.metrics().encode(),
    )
}

/// Headers every answer carries: no sniffing, no framing by other sites, no referrer to others,
/// and API answers are never cached.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` on
    // form posts, which the Origin check of the cookie-authenticated forms must refuse.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Serves the web line on `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: WebConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, hub, config, Router::new(), shutdown).await
}

/// Serves the web line together with other lines' HTTP routes (XMPP over WebSocket and
/// BOSH), on one listener with one connection limit. Those routes find the client's address
/// as a `SocketAddr` request extension.
pub async fn serve_with(
    listener: TcpListener,
    hub: Hub,
    config: WebConfig,
    others: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener::LimitedListener::new(
        listener,
        config.connections_per_ip,
        hub.metrics().connections.clone(),
    );
    let others = others.layer(axum::middleware::from_fn(client_address));
    let app = router(hub, config)
        .merge(others)
        .into_make_service_with_connect_info::<listener::PeerAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Puts the client's address in the request extensions for routes of other lines.
async fn client_address(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<listener::PeerAddr>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    request.extensions_mut().insert(peer.0);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is described in the OpenAPI document, and the document
    /// describes no route that does not exist.
    #[test]
    fn openapi_document_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let documented: std::collections::BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        // A route's path is the first string of a `.route(` call, on its line or the next.
        let quoted_path = |line: &str| -> Option<String> {
            let text = line.trim_start();
            let text = text.strip_prefix(".route(").unwrap_or(text);
            let text = text.strip_prefix('"')?;
            let path = &text[..text.find('"')?];
            path.starts_with('/').then(|| path.to_string())
        };
        let source = include_str!("lib.rs");
        let router = &source[source.find("pub fn router").expect("the router")..];
        let router = &router[..router.find("\n}\n").expect("its end")];
        let (api, top) = router.split_at(router.find(".nest(").expect("the API nest"));
        let mut served = std::collections::BTreeSet::new();
        served.extend(
            api.lines()
                .filter_map(quoted_path)
                .map(|p| format!("/api/v1{p}")),
        );
        served.extend(top.lines().filter_map(quoted_path));
        assert!(served.len() > 20, "routes found: {served:?}");
        for path in &served {
            assert!(
                documented.contains(path),
                "{path} is served but not documented"
            );
        }
        for path in &documented {
            assert!(served.contains(path), "{path} is documented but not served");
        }
    }
}
