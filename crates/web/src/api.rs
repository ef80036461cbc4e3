//! The REST part of the HTTP API (`/api/v1/...`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::model::*;
use switchboard_core::{Address, HubError};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Auth, ClientAddr, LOGIN_COOKIE};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, PathParams, QueryParams};
use crate::views;

fn address(state: &AppState, text: &str) -> ApiResult<Address> {
    state
        .hub
        .parse_address(text)
        .map_err(|e| ApiError::from(HubError::BadAddress(e)))
}

fn conversation_id(text: &str) -> ApiResult<ConversationId> {
    Uuid::parse_str(text)
        .map(ConversationId)
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a conversation id (a UUID)")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    user: String,
    password: String,
    /// A browser login: the token goes into an HttpOnly cookie and a CSRF token is returned.
    #[serde(default)]
    cookie: bool,
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    let kind = if req.cookie {
        LoginKind::Browser
    } else {
        LoginKind::Bearer
    };
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let login = state
        .hub
        .login(&req.user, &req.password, kind, &client, agent)
        .await?;
    let body = json!({
        "user": login.principal.address,
        "login": login.principal.login,
        "token": if req.cookie { None } else { Some(&login.token) },
        "csrf": login.csrf,
    });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    if req.cookie {
        let secure = if state.config.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{LOGIN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000{secure}",
            login.token
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

pub async fn logout(State(state): State<AppState>, auth: Auth) -> ApiResult<Response> {
    state.hub.logout(&auth.principal).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let expired = format!("{LOGIN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

pub async fn me(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let settings = state.hub.settings(&auth.principal).await?;
    Ok(Json(json!({
        "user": auth.principal.address,
        "login": auth.principal.login,
        "settings": views::settings(&settings),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    visibility: Option<Visibility>,
    message_policy: Option<MessagePolicy>,
    #[serde(default, with = "double_option")]
    display_name: Option<Option<String>>,
}

/// Tells "absent" (leave as is) from `null` (clear).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Ok(Some(Option::deserialize(d)?))
    }
}

pub async fn update_settings(
    State(state): State<AppState>,
    auth: Auth,
    Body(req): Body<SettingsRequest>,
) -> ApiResult<Json<Value>> {
    let mut settings = state.hub.settings(&auth.principal).await?;
    if let Some(v) = req.visibility {
        settings.visibility = v;
    }
    if let Some(p) = req.message_policy {
        settings.message_policy = p;
    }
    if let Some(name) = req.display_name {
        settings.display_name = name;
    }
    let settings = state.hub.update_settings(&auth.principal, settings).await?;
    Ok(Json(views::settings(&settings)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    old: String,
    new: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    auth: Auth,
    Body(req): Body<PasswordRequest>,
) -> ApiResult<StatusCode> {
    state
        .hub
        .change_password(&auth.principal, &req.old, &req.new)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn logins(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let list = state.hub.logins(&auth.principal).await?;
    Ok(Json(json!({
        "current": auth.principal.login,
        "logins": list.iter().map(views::login).collect::<Vec<_>>(),
    })))
}

pub async fn revoke_login(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    state.hub.revoke_login(&auth.principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn contacts(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let list = state.hub.contacts(&auth.principal).await?;
    Ok(Json(json!({
        "contacts": list.iter().map(views::contact).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRequest {
    address: String,
}

pub async fn request_contact(
    State(state): State<AppState>,
    auth: Auth,
    Body(req): Body<ContactRequest>,
) -> ApiResult<StatusCode> {
    let peer = address(&state, &req.address)?;
    state.hub.request_contact(&auth.principal, &peer).await?;
    Ok(StatusCode::ACCEPTED)
}

pub async fn accept_contact(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(peer): PathParams<String>,
) -> ApiResult<StatusCode> {
    let peer = address(&state, &peer)?;
    state
        .hub
        .answer_contact(&auth.principal, &peer, true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn refuse_contact(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(peer): PathParams<String>,
) -> ApiResult<StatusCode> {
    let peer = address(&state, &peer)?;
    state
        .hub
        .answer_contact(&auth.principal, &peer, false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactUpdate {
    #[serde(default, with = "double_option")]
    name: Option<Option<String>>,
    chosen: Option<bool>,
}

pub async fn update_contact(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(peer): PathParams<String>,
    Body(req): Body<ContactUpdate>,
) -> ApiResult<StatusCode> {
    let peer = address(&state, &peer)?;
    state
        .hub
        .update_contact(&auth.principal, &peer, req.name, req.chosen)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_contact(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(peer): PathParams<String>,
) -> ApiResult<StatusCode> {
    let peer = address(&state, &peer)?;
    state.hub.remove_contact(&auth.principal, &peer).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn blocks(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let list = state.hub.blocked(&auth.principal).await?;
    Ok(Json(json!({ "blocked": list })))
}

pub async fn block(
    State(state): State<AppState>,
    auth: Auth,
    Body(req): Body<ContactRequest>,
) -> ApiResult<StatusCode> {
    let peer = address(&state, &req.address)?;
    state.hub.block(&auth.principal, &peer).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unblock(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(peer): PathParams<String>,
) -> ApiResult<StatusCode> {
    let peer = address(&state, &peer)?;
    state.hub.unblock(&auth.principal, &peer).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn conversations(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let list = state.hub.conversations(&auth.principal).await?;
    Ok(Json(json!({
        "conversations": list.iter().map(views::conversation_entry).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    /// A direct conversation with this person (created on first use).
    with: Option<String>,
    /// A group conversation with these members (besides the caller).
    members: Option<Vec<String>>,
    title: Option<String>,
    #[serde(default)]
    confidential: bool,
}

pub async fn create_conversation(
    State(state): State<AppState>,
    auth: Auth,
    Body(req): Body<NewConversation>,
) -> ApiResult<Response> {
    let view = match (req.with, req.members) {
        (Some(peer), None) => {
            if req.confidential || req.title.is_some() {
                return Err(ApiError::bad_request(
                    "a direct conversation has no title and is never confidential; create a group with \"members\" instead",
                ));
            }
            let peer = address(&state, &peer)?;
            state.hub.open_direct(&auth.principal, &peer).await?
        }
        (None, Some(members)) => {
            let members = members
                .iter()
                .map(|m| address(&state, m))
                .collect::<ApiResult<Vec<_>>>()?;
            state
                .hub
                .create_group(&auth.principal, req.title, &members, req.confidential)
                .await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either \"with\" (a direct conversation) or \"members\" (a group)",
            ));
        }
    };
    Ok((StatusCode::OK, Json(views::conversation_view(&view))).into_response())
}

pub async fn conversation(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let id = conversation_id(&id)?;
    let view = state.hub.conversation(&auth.principal, id).await?;
    Ok(Json(views::conversation_view(&view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    before: Option<i64>,
    limit: Option<usize>,
}

pub async fn history(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    let id = conversation_id(&id)?;
    let messages = state
        .hub
        .history(
            &auth.principal,
            id,
            q.before.map(Seq),
            q.limit.unwrap_or(50),
        )
        .await?;
    Ok(Json(json!({
        "messages": messages.iter().map(views::message).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    client_id: String,
    body: String,
}

pub async fn send(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
    Body(req): Body<SendRequest>,
) -> ApiResult<Response> {
    let id = conversation_id(&id)?;
    let ack = state
        .hub
        .send(&auth.principal, id, &req.client_id, &req.body)
        .await?;
    let status = if ack.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(views::ack(&ack))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    upto: i64,
}

pub async fn mark_read(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
    Body(req): Body<ReadRequest>,
) -> ApiResult<StatusCode> {
    let id = conversation_id(&id)?;
    state
        .hub
        .mark_read(&auth.principal, id, Seq(req.upto))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypingRequest {
    state: Typing,
}

pub async fn typing(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
    Body(req): Body<TypingRequest>,
) -> ApiResult<StatusCode> {
    let id = conversation_id(&id)?;
    state.hub.typing(&auth.principal, id, req.state).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn fallback() -> ApiError {
    ApiError::not_found("there is no such API endpoint")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccountRequest {
    user: String,
    password: String,
}

fn account_view(a: &Account) -> Value {
    json!({"address": a.address, "created_at": a.created_at})
}

/// Self-registration, when the server allows it.
pub async fn register(
    State(state): State<AppState>,
    Body(req): Body<NewAccountRequest>,
) -> ApiResult<Response> {
    let user = address(&state, &req.user)?;
    let account = state.hub.register(&user, &req.password).await?;
    Ok((StatusCode::CREATED, Json(account_view(&account))).into_response())
}

/// An administrator (listed in `accounts.admins`).
pub struct Admin;

impl Admin {
    fn check(state: &AppState, auth: &Auth) -> ApiResult<Admin> {
        if state.hub.is_admin(&auth.principal) {
            Ok(Admin)
        } else {
            Err(ApiError::forbidden(
                "this needs an administrator (accounts.admins in the configuration)",
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmQuery {
    realm: Option<String>,
}

pub async fn admin_users(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(q): QueryParams<RealmQuery>,
) -> ApiResult<Json<Value>> {
    Admin::check(&state, &auth)?;
    let realm = q
        .realm
        .map(|r| switchboard_core::Realm::parse(&r).map_err(HubError::from))
        .transpose()?;
    let list = state.hub.list_users(realm.as_ref()).await?;
    Ok(Json(json!({
        "users": list.iter().map(account_view).collect::<Vec<_>>(),
    })))
}

pub async fn admin_add_user(
    State(state): State<AppState>,
    auth: Auth,
    Body(req): Body<NewAccountRequest>,
) -> ApiResult<Response> {
    Admin::check(&state, &auth)?;
    let user = address(&state, &req.user)?;
    let account = state.hub.add_user(&user, &req.password).await?;
    Ok((StatusCode::CREATED, Json(account_view(&account))).into_response())
}

pub async fn admin_remove_user(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(user): PathParams<String>,
) -> ApiResult<StatusCode> {
    Admin::check(&state, &auth)?;
    let user = address(&state, &user)?;
    state.hub.remove_user(&user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    password: String,
}

pub async fn admin_set_password(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(user): PathParams<String>,
    Body(req): Body<SetPasswordRequest>,
) -> ApiResult<StatusCode> {
    Admin::check(&state, &auth)?;
    let user = address(&state, &user)?;
    state.hub.set_password(&user, &req.password).await?;
    Ok(StatusCode::NO_CONTENT)
}
