//! The built-in web messenger: a plain JavaScript page served at `/`, talking to the HTTP API,
//! the WebSocket stream (falling back to long-poll by itself) with a browser cookie login.
//! The assets are compiled into the binary; the page sends a strict Content-Security-Policy
//! (no inline scripts or styles, nothing from other origins).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

const INDEX: &str = include_str!("messenger/index.html");
const APP_JS: &str = include_str!("messenger/app.js");
const APP_CSS: &str = include_str!("messenger/app.css");

/// The policy of every messenger asset.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; media-src 'self' data:; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_no_inline_code_and_no_html_from_data() {
        assert!(INDEX.contains("<script src=\"/app.js\""));
        assert!(!INDEX.contains(" style="), "inline style in index.html");
        assert!(!INDEX.contains("<style"), "inline style in index.html");
        for handler in ["onclick=", "onload=", "onsubmit=", "onerror="] {
            assert!(!INDEX.contains(handler), "inline handler in index.html");
        }
        assert!(!APP_JS.contains("innerHTML"), "innerHTML in app.js");
        assert!(!APP_JS.contains("eval("), "eval in app.js");
    }
}
