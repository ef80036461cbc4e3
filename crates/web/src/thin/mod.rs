//! The thin clients: `/lite`, server-rendered HTML pages and forms for browsers without
//! JavaScript (lynx, w3m), and `/wap`, the same functions as WML 1.1 decks for old phones.
//!
//! Both sign in like a browser (the `sb_login` HttpOnly cookie of a browser login). The CSRF
//! token of that login is kept in a second HttpOnly cookie, `sb_csrf`, and copied into a hidden
//! field of every form; a form is accepted only when the field equals the cookie and is the
//! login's token. A third cookie, `sb_thin`, names a server-held session and the event position
//! the page client has seen: every page load polls that session without waiting (seed E8), so
//! the person shows as online while they use the pages.

mod escape;
mod lite;
mod wap;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use switchboard_core::hub::{ContactView, Principal, SessionSlot};
use switchboard_core::model::*;
use switchboard_core::{Address, Hub, HubError};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{ClientAddr, LOGIN_COOKIE, cookie, origin_allowed};
use crate::error::ApiError;

pub const CSRF_COOKIE: &str = "sb_csrf";
pub const SESSION_COOKIE: &str = "sb_thin";
/// Events drained from the session per page load at most.
const MAX_DRAIN: usize = 2000;
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

type Fields = HashMap<String, String>;

/// How one kind of thin client renders its pages.
pub trait Flavor: Send + Sync + 'static {
    /// The path prefix, e.g. `/lite`.
    const BASE: &'static str;
    const CONTENT_TYPE: &'static str;
    /// Contacts (and conversations) per page.
    const CONTACTS_PER_PAGE: usize;
    /// Messages per page.
    const MESSAGES_PER_PAGE: usize;

    fn sign_in(error: Option<&str>) -> String;
    fn home(page: &HomePage) -> String;
    fn conversation(page: &ConversationPage) -> String;
    fn error(message: &str, signed_in: bool) -> String;
}

pub struct Lite;
pub struct Wap;

/// A contact line.
pub struct ContactLine {
    pub address: String,
    pub name: Option<String>,
    pub presence: Presence,
    /// They asked us and wait for our answer.
    pub incoming: bool,
    /// We asked them and wait for theirs.
    pub outgoing: bool,
    /// We may see their presence.
    pub accepted: bool,
}

pub struct ConversationLine {
    pub id: String,
    pub name: String,
    pub unread: i64,
}

pub struct HomePage {
    pub me: String,
    pub csrf: String,
    pub presence: Option<Presence>,
    pub contacts: Vec<ContactLine>,
    pub conversations: Vec<ConversationLine>,
    pub page: usize,
    pub more: bool,
}

pub struct ConversationPage {
    pub id: String,
    pub name: String,
    pub me: String,
    pub csrf: String,
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
    /// The `before` of the page of older messages, when there are any.
    pub older: Option<i64>,
    /// Whether this is the newest page.
    pub newest: bool,
    /// A fresh client id for the send form: submitting the same form twice stores once.
    pub client_id: String,
}

/// The routes of both thin clients.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(flavor_routes::<Lite>())
        .merge(flavor_routes::<Wap>())
}

fn flavor_routes<F: Flavor>() -> Router<AppState> {
    let b = F::BASE;
    Router::new()
        .route(b, get(home::<F>))
        .route(&format!("{b}/"), get(home::<F>))
        .route(&format!("{b}/login"), post(login::<F>))
        .route(&format!("{b}/logout"), post(logout::<F>))
        .route(&format!("{b}/contacts"), post(add_contact::<F>))
        .route(&format!("{b}/accept"), post(accept::<F>))
        .route(&format!("{b}/refuse"), post(refuse::<F>))
        .route(&format!("{b}/presence"), post(presence::<F>))
        .route(&format!("{b}/open"), post(open::<F>))
        .route(&format!("{b}/c/{{id}}"), get(conversation::<F>))
        .route(&format!("{b}/c/{{id}}/send"), post(send::<F>))
}

// ---- responses -------------------------------------------------------------------------

fn page<F: Flavor>(status: StatusCode, body: String, cookies: &[String]) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(F::CONTENT_TYPE),
    );
    decorate(h, cookies);
    response
}

fn decorate(h: &mut HeaderMap, cookies: &[String]) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
}

/// POST-redirect-GET.
fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    decorate(h, cookies);
    response
}

fn failure<F: Flavor>(e: HubError, signed_in: bool) -> Response {
    let e = ApiError::from(e);
    page::<F>(e.status, F::error(&e.message, signed_in), &[])
}

fn refused<F: Flavor>(message: &str) -> Response {
    page::<F>(StatusCode::FORBIDDEN, F::error(message, true), &[])
}

fn set_cookie(state: &AppState, name: &str, value: &str) -> String {
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000{secure}")
}

fn expired(name: &str) -> String {
    format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn expire_all() -> Vec<String> {
    vec![
        expired(LOGIN_COOKIE),
        expired(CSRF_COOKIE),
        expired(SESSION_COOKIE),
    ]
}

// ---- who is calling ----------------------------------------------------------------------

/// A signed-in page request: the principal, its CSRF token and the cookie that keeps its
/// session going.
struct Caller {
    principal: Principal,
    csrf: String,
    slot: Option<Arc<SessionSlot>>,
    cookies: Vec<String>,
}

/// The signed-in caller, or the response to give instead (the sign-in page).
async fn caller<F: Flavor>(state: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    let Some(token) = cookie(headers, LOGIN_COOKIE) else {
        return Err(page::<F>(StatusCode::OK, F::sign_in(None), &[]));
    };
    let principal = match state.hub.authenticate(token).await {
        Ok(p) if p.kind == LoginKind::Browser => p,
        Ok(_) | Err(HubError::Unauthenticated) => {
            return Err(page::<F>(
                StatusCode::OK,
                F::sign_in(Some("Your sign-in has ended; please sign in again.")),
                &expire_all(),
            ));
        }
        Err(e) => return Err(failure::<F>(e, false)),
    };
    if !origin_allowed(headers, state) {
        return Err(refused::<F>(
            "This request comes from a page that may not use your sign-in.",
        ));
    }
    let csrf = cookie(headers, CSRF_COOKIE).unwrap_or("").to_string();
    if !principal.csrf_matches(&csrf) {
        // Signed in elsewhere (e.g. the JSON API's cookie login) without the page's CSRF
        // cookie: the forms could not work, so ask for a sign-in of these pages.
        return Err(page::<F>(
            StatusCode::OK,
            F::sign_in(Some("Please sign in to use these pages.")),
            &[],
        ));
    }
    let (slot, session_cookie) = beat(&state.hub, &principal, headers).await;
    let mut cookies = Vec::new();
    if let Some(value) = session_cookie {
        cookies.push(set_cookie(state, SESSION_COOKIE, &value));
    }
    Ok(Caller {
        principal,
        csrf,
        slot,
        cookies,
    })
}

/// Drains what is waiting for the session without waiting, and keeps the stream for the next
/// page load.
async fn drain(
    hub: &Hub,
    mut stream: switchboard_core::hub::EventStream,
) -> (Arc<SessionSlot>, String) {
    for _ in 0..MAX_DRAIN {
        if stream.try_next().await.is_none() {
            break;
        }
    }
    let slot = stream.session().clone();
    let value = format!("{}.{}", slot.id.0, stream.position().0);
    hub.park(stream);
    (slot, value)
}

/// Each page load is the page client's poll (seed E8): resumes the session named by the
/// session cookie, acknowledging what the previous load was handed, or opens a new one.
async fn beat(
    hub: &Hub,
    principal: &Principal,
    headers: &HeaderMap,
) -> (Option<Arc<SessionSlot>>, Option<String>) {
    if let Some((id, pos)) = cookie(headers, SESSION_COOKIE).and_then(|v| v.rsplit_once('.'))
        && let Ok(pos) = pos.parse::<i64>()
        && let Ok(stream) = hub
            .poll_session(principal, &SessionId(id.to_string()), Pos(pos))
            .await
    {
        let (slot, value) = drain(hub, stream).await;
        return (Some(slot), Some(value));
    }
    match hub.open_session(principal).await {
        Ok(stream) => {
            let (slot, value) = drain(hub, stream).await;
            (Some(slot), Some(value))
        }
        Err(e) => {
            tracing::debug!(error = %e, "a thin client could not open a session");
            (None, None)
        }
    }
}

/// Checks a form's CSRF field against the cookie and the login.
fn csrf_ok(caller: &Caller, fields: &Fields) -> bool {
    let field = fields.get("csrf").map(String::as_str).unwrap_or("");
    !field.is_empty() && field == caller.csrf && caller.principal.csrf_matches(field)
}

/// The signed-in caller of a form, with its CSRF token checked.
async fn form_caller<F: Flavor>(
    state: &AppState,
    headers: &HeaderMap,
    fields: &Fields,
) -> Result<Caller, Response> {
    let caller = match caller::<F>(state, headers).await {
        Ok(c) => c,
        Err(_) if cookie(headers, LOGIN_COOKIE).is_none() => {
            return Err(see_other(F::BASE, &[]));
        }
        Err(r) if r.status() == StatusCode::OK => {
            // The sign-in page: this form's sign-in has ended or is not one of these pages.
            return Err(refused::<F>(
                "Your sign-in for these pages has ended; please sign in again.",
            ));
        }
        Err(r) => return Err(r),
    };
    if !csrf_ok(&caller, fields) {
        return Err(refused::<F>(
            "This form is missing its security token or it does not match your sign-in. \
             Reload the page and try again.",
        ));
    }
    Ok(caller)
}

fn field<'a>(fields: &'a Fields, name: &str) -> &'a str {
    fields.get(name).map(|s| s.trim()).unwrap_or("")
}

fn parse_address(hub: &Hub, text: &str) -> Result<Address, HubError> {
    hub.parse_address(text).map_err(HubError::BadAddress)
}

// ---- pages -------------------------------------------------------------------------------

async fn home<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Fields>,
) -> Response {
    let caller = match caller::<F>(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match home_page::<F>(&state.hub, &caller, &q).await {
        Ok(p) => page::<F>(StatusCode::OK, F::home(&p), &caller.cookies),
        Err(e) => failure::<F>(e, true),
    }
}

async fn home_page<F: Flavor>(
    hub: &Hub,
    caller: &Caller,
    q: &Fields,
) -> Result<HomePage, HubError> {
    let principal = &caller.principal;
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut contacts = hub.contacts(principal).await?;
    // An entry with nothing asked or granted either way (a refused request) is not shown.
    contacts.retain(|c| c.contact.to != SubState::None || c.contact.from != SubState::None);
    // Requests waiting for an answer first, then online people, then by address.
    contacts.sort_by_key(|c: &ContactView| {
        (
            c.contact.from != SubState::Pending,
            c.presence.show,
            c.contact.peer.as_str().to_string(),
        )
    });
    let per = F::CONTACTS_PER_PAGE;
    let more = contacts.len() > (page + 1) * per;
    let names: HashMap<ConversationId, String> = contacts
        .iter()
        .map(|c| {
            (
                ConversationId::direct(&principal.address, &c.contact.peer),
                c.contact
                    .name
                    .clone()
                    .unwrap_or_else(|| c.contact.peer.as_str().to_string()),
            )
        })
        .collect();
    let contacts = contacts
        .into_iter()
        .skip(page * per)
        .take(per)
        .map(|c| ContactLine {
            address: c.contact.peer.as_str().to_string(),
            name: c.contact.name.clone(),
            presence: c.presence,
            incoming: c.contact.from == SubState::Pending,
            outgoing: c.contact.to == SubState::Pending,
            accepted: c.contact.to == SubState::Accepted,
        })
        .collect();
    let mut entries = hub.conversations(principal).await?;
    entries.sort_by_key(|e| {
        (
            std::cmp::Reverse(e.last_seq.0 - e.me.read.0 > 0),
            std::cmp::Reverse(e.last_seq.0),
        )
    });
    let mut conversations = Vec::new();
    for e in entries.into_iter().take(per) {
        let id = e.conversation.id;
        let name = match (&e.conversation.title, names.get(&id)) {
            (Some(title), _) => title.clone(),
            (None, Some(name)) => name.clone(),
            (None, None) => match hub.conversation(principal, id).await {
                Ok(view) => view
                    .members
                    .iter()
                    .filter(|m| m.user != principal.user)
                    .map(|m| m.address.as_str().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(_) => "a conversation".to_string(),
            },
        };
        conversations.push(ConversationLine {
            id: id.0.to_string(),
            name,
            unread: (e.last_seq.0 - e.me.read.0).max(0),
        });
    }
    Ok(HomePage {
        me: principal.address.as_str().to_string(),
        csrf: caller.csrf.clone(),
        presence: caller.slot.as_ref().map(|s| s.presence()),
        contacts,
        conversations,
        page,
        more,
    })
}

fn conversation_id(text: &str) -> Result<ConversationId, HubError> {
    Uuid::parse_str(text)
        .map(ConversationId)
        .map_err(|_| HubError::NotFound("there is no such conversation".into()))
}

async fn conversation<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Fields>,
) -> Response {
    let caller = match caller::<F>(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match conversation_page::<F>(&state.hub, &caller, &id, &q).await {
        Ok(p) => page::<F>(StatusCode::OK, F::conversation(&p), &caller.cookies),
        Err(e) => failure::<F>(e, true),
    }
}

async fn conversation_page<F: Flavor>(
    hub: &Hub,
    caller: &Caller,
    id: &str,
    q: &Fields,
) -> Result<ConversationPage, HubError> {
    let principal = &caller.principal;
    let id = conversation_id(id)?;
    let view = hub.conversation(principal, id).await?;
    let before = q.get("before").and_then(|b| b.parse::<i64>().ok());
    let per = F::MESSAGES_PER_PAGE;
    // One more than shown tells whether there are older ones.
    let mut messages = hub.history(principal, id, before.map(Seq), per + 1).await?;
    let older = if messages.len() > per {
        messages.remove(0);
        messages.first().map(|m| m.seq.0)
    } else {
        None
    };
    let newest = before.is_none();
    if newest
        && let Some(last) = messages.last()
        && view
            .members
            .iter()
            .any(|m| m.user == principal.user && m.read < last.seq)
    {
        // Showing the newest messages is reading them.
        hub.mark_read(principal, id, last.seq).await?;
    }
    let name = match &view.conversation.title {
        Some(t) => t.clone(),
        None => view
            .members
            .iter()
            .filter(|m| m.user != principal.user)
            .map(|m| m.address.as_str().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    Ok(ConversationPage {
        id: id.0.to_string(),
        name,
        me: principal.address.as_str().to_string(),
        csrf: caller.csrf.clone(),
        messages,
        older,
        newest,
        client_id: format!("thin-{}", Uuid::new_v4().simple()),
    })
}

// ---- forms -------------------------------------------------------------------------------

async fn login<F: Flavor>(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    if !origin_allowed(&headers, &state) {
        return refused::<F>("This request comes from a page that may not sign you in.");
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let user = field(&fields, "user");
    let password = fields.get("password").map(String::as_str).unwrap_or("");
    let login = match state
        .hub
        .login(user, password, LoginKind::Browser, &client, agent)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            let e = ApiError::from(e);
            let message = if e.status == StatusCode::UNAUTHORIZED {
                "Wrong user name or password.".to_string()
            } else {
                e.message
            };
            return page::<F>(e.status, F::sign_in(Some(&message)), &[]);
        }
    };
    let mut cookies = vec![
        set_cookie(&state, LOGIN_COOKIE, &login.token),
        set_cookie(&state, CSRF_COOKIE, login.csrf.as_deref().unwrap_or("")),
    ];
    if let Ok(stream) = state.hub.open_session(&login.principal).await {
        let (_, value) = drain(&state.hub, stream).await;
        cookies.push(set_cookie(&state, SESSION_COOKIE, &value));
    }
    see_other(F::BASE, &cookies)
}

async fn logout<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    let caller = match form_caller::<F>(&state, &headers, &fields).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(slot) = &caller.slot {
        state.hub.close_session(slot);
    }
    if let Err(e) = state.hub.logout(&caller.principal).await {
        return failure::<F>(e, true);
    }
    see_other(F::BASE, &expire_all())
}

/// Runs a signed-in form's action and redirects to `F::BASE` + the path it returns.
async fn act<F, Fut>(
    state: AppState,
    headers: HeaderMap,
    fields: Fields,
    action: impl FnOnce(AppState, Caller, Fields) -> Fut,
) -> Response
where
    F: Flavor,
    Fut: Future<Output = (Vec<String>, Result<String, HubError>)>,
{
    let caller = match form_caller::<F>(&state, &headers, &fields).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match action(state, caller, fields).await {
        (cookies, Ok(path)) => see_other(&format!("{}{path}", F::BASE), &cookies),
        (_, Err(e)) => failure::<F>(e, true),
    }
}

async fn add_contact<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    act::<F, _>(state, headers, fields, |state, caller, fields| async move {
        let result = async {
            let peer = parse_address(&state.hub, field(&fields, "address"))?;
            state.hub.request_contact(&caller.principal, &peer).await?;
            Ok(String::new())
        }
        .await;
        (caller.cookies, result)
    })
    .await
}

async fn answer<F: Flavor>(
    state: AppState,
    headers: HeaderMap,
    fields: Fields,
    yes: bool,
) -> Response {
    act::<F, _>(
        state,
        headers,
        fields,
        move |state, caller, fields| async move {
            let result = async {
                let peer = parse_address(&state.hub, field(&fields, "address"))?;
                state
                    .hub
                    .answer_contact(&caller.principal, &peer, yes)
                    .await?;
                Ok(String::new())
            }
            .await;
            (caller.cookies, result)
        },
    )
    .await
}

async fn accept<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    answer::<F>(state, headers, fields, true).await
}

async fn refuse<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    answer::<F>(state, headers, fields, false).await
}

async fn presence<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    act::<F, _>(state, headers, fields, |state, caller, fields| async move {
        let result = (|| {
            let show = Availability::parse(field(&fields, "show")).ok_or_else(|| {
                HubError::InvalidInput(
                    "choose available, away, dnd (do not disturb), xa or offline".into(),
                )
            })?;
            let status = field(&fields, "status");
            let slot = caller.slot.as_ref().ok_or_else(|| {
                HubError::RateLimited(
                    "no session could be opened for this page (too many are open); \
                     close another client and try again"
                        .into(),
                )
            })?;
            state.hub.set_presence(
                slot,
                Presence {
                    show,
                    status: (!status.is_empty()).then(|| status.to_string()),
                },
            )?;
            Ok(String::new())
        })();
        (caller.cookies, result)
    })
    .await
}

async fn open<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    act::<F, _>(state, headers, fields, |state, caller, fields| async move {
        let result = async {
            let peer = parse_address(&state.hub, field(&fields, "address"))?;
            let view = state.hub.open_direct(&caller.principal, &peer).await?;
            Ok(format!("/c/{}", view.conversation.id.0))
        }
        .await;
        (caller.cookies, result)
    })
    .await
}

async fn send<F: Flavor>(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Fields>,
) -> Response {
    act::<F, _>(state, headers, fields, |state, caller, fields| async move {
        let result = async {
            let id = conversation_id(&id)?;
            let body = fields.get("body").map(String::as_str).unwrap_or("");
            if !body.trim().is_empty() {
                let client_id = field(&fields, "client_id");
                if client_id.is_empty() {
                    return Err(HubError::InvalidInput(
                        "the form has no message id; reload the page".into(),
                    ));
                }
                state
                    .hub
                    .send(&caller.principal, id, client_id, body)
                    .await?;
            }
            Ok(format!("/c/{}", id.0))
        }
        .await;
        (caller.cookies, result)
    })
    .await
}

/// The presence choices, value and label.
pub const SHOWS: [(&str, &str); 5] = [
    ("available", "Available"),
    ("away", "Away"),
    ("dnd", "Do not disturb"),
    ("xa", "Extended away"),
    ("offline", "Invisible (offline)"),
];

pub fn show_label(show: Availability) -> &'static str {
    if show == Availability::Offline {
        return "Offline";
    }
    SHOWS
        .iter()
        .find(|(v, _)| *v == show.as_str())
        .map(|(_, l)| *l)
        .unwrap_or("?")
}
