//! The event stream, two ways: a WebSocket, and an HTTP long-poll carrying the same events for
//! clients or proxies that cannot hold a WebSocket (seed 003: E8). Both attach to a
//! server-held session and resume it after a drop.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::hub::{EventStream, Principal, SessionSlot};
use switchboard_core::model::*;
use switchboard_core::{Hub, HubError};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, PathParams, QueryParams};
use crate::views;

/// Most events in one long-poll answer.
const MAX_POLL_EVENTS: usize = 200;

fn session_view(slot: &SessionSlot) -> Value {
    json!({
        "id": slot.id,
        "login": slot.login,
        "last_seen": slot.last_seen(),
        "presence": views::presence(&slot.presence()),
    })
}

fn own_session(hub: &Hub, principal: &Principal, id: &str) -> ApiResult<Arc<SessionSlot>> {
    hub.sessions_of(principal)
        .into_iter()
        .find(|s| s.id.0 == id)
        .ok_or_else(|| HubError::SessionGone.into())
}

/// Opens a session for a long-poll client. Its stream is kept until the first poll.
pub async fn open_session(State(state): State<AppState>, auth: Auth) -> ApiResult<Response> {
    let stream = state.hub.open_session(&auth.principal).await?;
    let body = json!({
        "session": stream.session().id,
        "position": stream.position(),
    });
    state.hub.park(stream);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn sessions(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let list = state.hub.sessions_of(&auth.principal);
    Ok(Json(json!({
        "sessions": list.iter().map(|s| session_view(s)).collect::<Vec<_>>(),
    })))
}

pub async fn close_session(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let slot = own_session(&state.hub, &auth.principal, &id)?;
    state.hub.close_session(&slot);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceRequest {
    show: Availability,
    status: Option<String>,
}

pub async fn set_presence(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
    Body(req): Body<PresenceRequest>,
) -> ApiResult<StatusCode> {
    let slot = own_session(&state.hub, &auth.principal, &id)?;
    state.hub.set_presence(
        &slot,
        Presence {
            show: req.show,
            status: req.status,
        },
    )?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    /// The position of the last durable event the client has.
    #[serde(default)]
    after: i64,
    /// Seconds to wait for an event (capped by the server's long-poll timeout).
    timeout: Option<u64>,
}

/// One long-poll request: answers at once with what is waiting, or waits until an event comes
/// or the timeout passes. `after` acknowledges everything up to it.
pub async fn poll(
    State(state): State<AppState>,
    auth: Auth,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<PollQuery>,
) -> ApiResult<Json<Value>> {
    let id = SessionId(id);
    let mut stream = state
        .hub
        .poll_session(&auth.principal, &id, Pos(q.after))
        .await?;
    let wait = q
        .timeout
        .map(Duration::from_secs)
        .unwrap_or(state.config.long_poll_timeout)
        .min(state.config.long_poll_timeout);
    let mut events = Vec::new();
    let mut ended = false;
    while events.len() < MAX_POLL_EVENTS {
        match stream.try_next().await {
            Some(e) if views::shown(&e) => events.push(views::event(&e)),
            Some(_) => {}
            None => break,
        }
    }
    if events.is_empty() {
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(e)) => {
                if views::shown(&e) {
                    events.push(views::event(&e));
                }
                while events.len() < MAX_POLL_EVENTS {
                    match stream.try_next().await {
                        Some(e) if views::shown(&e) => events.push(views::event(&e)),
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            Ok(None) => ended = true,
            Err(_) => {}
        }
    }
    let body = json!({
        "session": id,
        "position": stream.position(),
        "events": events,
    });
    if !ended {
        state.hub.park(stream);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume this session instead of opening a new one.
    session: Option<String>,
    /// With `session`: the position of the last durable event the client has.
    after: Option<i64>,
}

/// The WebSocket event stream. The session is attached before the upgrade so that a session
/// that cannot be resumed is an ordinary HTTP error (410 `session_gone`).
pub async fn websocket(
    State(state): State<AppState>,
    auth: Auth,
    QueryParams(q): QueryParams<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let stream = match q.session {
        Some(id) => {
            state
                .hub
                .resume_session(&auth.principal, &SessionId(id), Pos(q.after.unwrap_or(0)))
                .await?
        }
        None => state.hub.open_session(&auth.principal).await?,
    };
    let hub = state.hub.clone();
    let ping = state.config.ws_ping_interval;
    let principal = auth.principal;
    // Idle sessions must stay small: the socket's read buffer is kept for its whole life, so it
    // starts at 1 KiB (tungstenite's default is 128 KiB) and grows only for a large frame.
    // Measured (`scripts/bench idle`): 14.3 KiB per idle session with 4 KiB, 11.5 KiB with
    // 1 KiB. Nothing is buffered for writing: every frame is flushed at once.
    Ok(upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(state.config.max_body_bytes)
        .on_upgrade(move |socket| run_socket(socket, hub, principal, stream, ping))
        .into_response())
}

/// A command from a WebSocket client.
enum Command {
    /// The client has every durable event up to `position`.
    Ack {
        position: i64,
    },
    Send {
        conversation: Uuid,
        client_id: String,
        body: String,
    },
    Presence {
        show: Availability,
        status: Option<String>,
    },
    Read {
        conversation: Uuid,
        upto: i64,
    },
    Typing {
        conversation: Uuid,
        state: Typing,
    },
    Ping,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum CommandKind {
    Ack,
    Send,
    Presence,
    Read,
    Typing,
    Ping,
}

/// The wire form of a command: one flat object. Parsed as a plain struct rather than a
/// serde-tagged enum, which would first buffer every field into an intermediate tree; this
/// runs once per message sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    #[serde(rename = "type")]
    kind: CommandKind,
    position: Option<i64>,
    conversation: Option<Uuid>,
    client_id: Option<String>,
    body: Option<String>,
    show: Option<Availability>,
    status: Option<String>,
    upto: Option<i64>,
    state: Option<Typing>,
}

impl Command {
    fn parse(text: &str) -> Result<Command, String> {
        let raw: RawCommand = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let need = |field: &str| format!("this command needs \"{field}\"");
        Ok(match raw.kind {
            CommandKind::Ack => Command::Ack {
                position: raw.position.ok_or_else(|| need("position"))?,
            },
            CommandKind::Send => Command::Send {
                conversation: raw.conversation.ok_or_else(|| need("conversation"))?,
                client_id: raw.client_id.ok_or_else(|| need("client_id"))?,
                body: raw.body.ok_or_else(|| need("body"))?,
            },
            CommandKind::Presence => Command::Presence {
                show: raw.show.ok_or_else(|| need("show"))?,
                status: raw.status,
            },
            CommandKind::Read => Command::Read {
                conversation: raw.conversation.ok_or_else(|| need("conversation"))?,
                upto: raw.upto.ok_or_else(|| need("upto"))?,
            },
            CommandKind::Typing => Command::Typing {
                conversation: raw.conversation.ok_or_else(|| need("conversation"))?,
                state: raw.state.ok_or_else(|| need("state"))?,
            },
            CommandKind::Ping => Command::Ping,
        })
    }
}

fn error_frame(e: &ApiError, reference: Option<&str>) -> Value {
    json!({"type": "error", "ref": reference, "error": {"code": e.code, "message": e.message}})
}

async fn run_socket(
    socket: WebSocket,
    hub: Hub,
    principal: Principal,
    mut stream: EventStream,
    ping_every: Duration,
) {
    let (mut tx, mut rx) = socket.split();
    let slot = stream.session().clone();
    let hello = json!({
        "type": "session",
        "session": slot.id,
        "position": stream.position(),
        "resumed": stream.resumed(),
    });
    let mut sends = FuturesUnordered::new();
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut awaiting_pong = false;
    let mut close: Option<CloseFrame> = None;
    if tx
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(event) if !views::shown(&event) => {}
                Some(event) => {
                    let text = views::event_text(&event);
                    if tx.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => {
                    close = Some(CloseFrame {
                        code: 4000,
                        reason: "session ended or fell behind; resume it".into(),
                    });
                    break;
                }
            },
            frame = rx.next() => {
                let Some(Ok(frame)) = frame else { break };
                hub.touch(&slot);
                awaiting_pong = false;
                match frame {
                    Message::Text(text) => {
                        match Command::parse(&text) {
                            Ok(Command::Send { conversation, client_id, body }) => {
                                let hub = hub.clone();
                                let principal = principal.clone();
                                let origin = slot.clone();
                                sends.push(async move {
                                    let result = hub
                                        .send_from(&principal, Some(&origin), ConversationId(conversation), &client_id, &body)
                                        .await;
                                    match result {
                                        Ok(ack) => views::sent_text(&ack, &client_id),
                                        Err(e) => error_frame(&e.into(), Some(&client_id)).to_string(),
                                    }
                                });
                            }
                            Ok(command) => {
                                if let Some(reply) = handle(&hub, &principal, &slot, command).await
                                    && tx.send(Message::Text(reply.to_string().into())).await.is_err()
                                {
                                    break;
                                }
                            }
                            Err(e) => {
                                let error = ApiError::bad_request(format!("not a valid command: {e}"));
                                if tx.send(Message::Text(error_frame(&error, None).to_string().into())).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            },
            Some(reply) = sends.next(), if !sends.is_empty() => {
                if tx.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    // No frame at all for a whole interval after a ping: the peer is gone.
                    break;
                }
                awaiting_pong = true;
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    // Sends already submitted finish (their messages are stored either way); their replies
    // are written if the socket still takes them.
    while let Some(reply) = sends.next().await {
        let _ = tx.send(Message::Text(reply.into())).await;
    }
    if let Some(frame) = close {
        let _ = tx.send(Message::Close(Some(frame))).await;
    }
    drop(stream);
}

async fn handle(
    hub: &Hub,
    principal: &Principal,
    slot: &Arc<SessionSlot>,
    command: Command,
) -> Option<Value> {
    let result: Result<(), HubError> = match command {
        Command::Ack { position } => {
            hub.ack(slot, Pos(position));
            Ok(())
        }
        Command::Presence { show, status } => hub.set_presence(slot, Presence { show, status }),
        Command::Read { conversation, upto } => {
            hub.mark_read(principal, ConversationId(conversation), Seq(upto))
                .await
        }
        Command::Typing {
            conversation,
            state,
        } => {
            hub.typing(principal, ConversationId(conversation), state)
                .await
        }
        Command::Ping => return Some(json!({"type": "pong"})),
        // Sends are pipelined by the caller and never reach here.
        Command::Send { .. } => return None,
    };
    result.err().map(|e| error_frame(&e.into(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_say_what_is_wrong() {
        let c = Command::parse(
            r#"{"type":"send","conversation":"6d1c5a3e-9b2f-4c1e-8f7a-2b3c4d5e6f70","client_id":"a","body":"hi"}"#,
        );
        assert!(matches!(c, Ok(Command::Send { ref body, .. }) if body == "hi"));
        assert!(matches!(
            Command::parse(r#"{"type":"ack","position":7}"#),
            Ok(Command::Ack { position: 7 })
        ));
        let missing = Command::parse(r#"{"type":"send","client_id":"a","body":"hi"}"#)
            .err()
            .unwrap();
        assert_eq!(missing, "this command needs \"conversation\"");
        let unknown = Command::parse(r#"{"type":"dance"}"#).err().unwrap();
        assert!(unknown.contains("dance"), "{unknown}");
        let extra = Command::parse(r#"{"type":"ping","colour":"red"}"#)
            .err()
            .unwrap();
        assert!(extra.contains("colour"), "{extra}");
        assert!(Command::parse("not json").is_err());
    }
}
