//! Who is calling: a bearer token (programs) or an HttpOnly login cookie plus a CSRF token
//! (browsers).

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use switchboard_core::hub::Principal;
use switchboard_core::model::LoginKind;

use crate::AppState;
use crate::error::ApiError;

pub const LOGIN_COOKIE: &str = "sb_login";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// An authenticated caller.
pub struct Auth {
    pub principal: Principal,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a browser request comes from a page this server trusts: its own origin or one
/// configured. Requests without `Origin` do not come from a cross-site page.
pub fn origin_allowed(headers: &HeaderMap, state: &AppState) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if state.config.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(&parts.headers) {
            let principal = state.hub.authenticate(token).await?;
            return Ok(Auth { principal });
        }
        let Some(token) = cookie(&parts.headers, LOGIN_COOKIE) else {
            return Err(switchboard_core::HubError::Unauthenticated.into());
        };
        let principal = state.hub.authenticate(token).await?;
        if principal.kind != LoginKind::Browser {
            return Err(switchboard_core::HubError::Unauthenticated.into());
        }
        if !origin_allowed(&parts.headers, state) {
            return Err(ApiError::forbidden(
                "this request's Origin is not allowed to use the login cookie",
            ));
        }
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let csrf = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !principal.csrf_matches(csrf) {
                return Err(ApiError::forbidden(
                    "a cookie-authenticated request must carry the X-CSRF-Token header from login",
                ));
            }
        }
        Ok(Auth { principal })
    }
}

/// The caller's network address, for per-client limits.
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.config.trust_forwarded_for
            && let Some(first) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
        {
            return Ok(ClientAddr(first.trim().to_string()));
        }
        let addr = parts
            .extensions
            .get::<ConnectInfo<crate::listener::PeerAddr>>()
            .map(|c| c.0.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(ClientAddr(addr))
    }
}
