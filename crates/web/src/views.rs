//! The JSON shapes of the API: core types turned into what clients read.

use serde_json::{Value, json};
use switchboard_core::hub::{ContactView, ConversationView, SendAck};
use switchboard_core::model::*;

pub fn presence(p: &Presence) -> Value {
    json!({"show": p.show, "status": p.status})
}

pub fn contact(view: &ContactView) -> Value {
    let c = &view.contact;
    json!({
        "address": c.peer,
        "to": c.to,
        "from": c.from,
        "name": c.name,
        "chosen": c.chosen,
        "presence": presence(&view.presence),
    })
}

pub fn conversation(c: &Conversation) -> Value {
    json!({
        "id": c.id,
        "kind": c.kind,
        "title": c.title,
        "confidential": c.confidential,
        "created_by": c.created_by,
        "created_at": c.created_at,
    })
}

pub fn conversation_view(v: &ConversationView) -> Value {
    let mut out = conversation(&v.conversation);
    out["members"] = v
        .members
        .iter()
        .map(|m| json!({"address": m.address, "delivered": m.delivered, "read": m.read}))
        .collect();
    out["last_seq"] = json!(v.last_seq);
    out
}

pub fn conversation_entry(e: &ConversationEntry) -> Value {
    let mut out = conversation(&e.conversation);
    out["last_seq"] = json!(e.last_seq);
    out["delivered"] = json!(e.me.delivered);
    out["read"] = json!(e.me.read);
    out["unread"] = json!((e.last_seq.0 - e.me.read.0).max(0));
    out
}

pub fn message(m: &StoredMessage) -> Value {
    json!({
        "id": m.id,
        "conversation": m.conversation,
        "seq": m.seq,
        "position": m.pos,
        "from": m.sender,
        "client_id": m.client_id,
        "body": m.body,
        "sent_at": m.sent_at,
    })
}

pub fn ack(a: &SendAck) -> Value {
    json!({
        "id": a.id,
        "conversation": a.conversation,
        "seq": a.seq,
        "position": a.pos,
        "sent_at": a.sent_at,
        "stored": a.stored,
        "duplicate": a.duplicate,
    })
}

pub fn settings(s: &AccountSettings) -> Value {
    json!({
        "visibility": s.visibility,
        "message_policy": s.message_policy,
        "display_name": s.display_name,
    })
}

pub fn login(l: &LoginRecord) -> Value {
    json!({
        "id": l.id,
        "kind": l.kind,
        "created_at": l.created_at,
        "last_used": l.last_used,
        "user_agent": l.user_agent,
    })
}

/// A message event, serialized straight from borrowed fields: this is the hot path (every
/// message to every connected recipient), where building a `Value` map first costs an
/// allocation per field.
#[derive(serde::Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a MessageId,
    conversation: &'a ConversationId,
    seq: Seq,
    position: Pos,
    from: &'a str,
    client_id: &'a str,
    body: &'a str,
    sent_at: Millis,
}

/// The acknowledgement frame a WebSocket sender gets (`ref` is its client id).
#[derive(serde::Serialize)]
struct SentFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref")]
    reference: &'a str,
    id: &'a MessageId,
    conversation: &'a ConversationId,
    seq: Option<Seq>,
    position: Option<Pos>,
    sent_at: Millis,
    stored: bool,
    duplicate: bool,
}

/// An event as JSON text, for the WebSocket.
pub fn event_text(e: &Event) -> String {
    match e {
        Event::Message(m) => serde_json::to_string(&MessageFrame {
            kind: "message",
            id: &m.id,
            conversation: &m.conversation,
            seq: m.seq,
            position: m.pos,
            from: m.sender.as_str(),
            client_id: &m.client_id,
            body: &m.body,
            sent_at: m.sent_at,
        })
        .unwrap_or_default(),
        other => event(other).to_string(),
    }
}

/// The acknowledgement of a message sent over the WebSocket, as JSON text.
pub fn sent_text(a: &SendAck, reference: &str) -> String {
    serde_json::to_string(&SentFrame {
        kind: "sent",
        reference,
        id: &a.id,
        conversation: &a.conversation,
        seq: a.seq,
        position: a.pos,
        sent_at: a.sent_at,
        stored: a.stored,
        duplicate: a.duplicate,
    })
    .unwrap_or_default()
}

/// Whether the web line shows an event at all: stanzas for another line's endpoints are not
/// for web clients.
pub fn shown(e: &Event) -> bool {
    !matches!(e, Event::Endpoint(_))
}

/// An event as it travels over the WebSocket and long-poll. Durable events carry their
/// `position`, which is what a client resumes after.
pub fn event(e: &Event) -> Value {
    match e {
        Event::Message(m) => {
            let mut v = message(m);
            v["type"] = json!("message");
            v
        }
        Event::Account(a) => {
            let mut v = serde_json::to_value(&a.event).unwrap_or(Value::Null);
            v["position"] = json!(a.pos);
            v["at"] = json!(a.at);
            v
        }
        Event::Presence(u) => json!({
            "type": "presence",
            "from": u.from,
            "show": u.presence.show,
            "status": u.presence.status,
        }),
        Event::Receipt(r) => json!({
            "type": "receipt",
            "conversation": r.conversation,
            "member": r.member,
            "kind": r.kind,
            "upto": r.upto,
        }),
        Event::Typing(t) => json!({
            "type": "typing",
            "conversation": t.conversation,
            "from": t.from,
            "state": t.state,
        }),
        Event::Relayed(m) => json!({
            "type": "relayed",
            "id": m.id,
            "conversation": m.conversation,
            "from": m.sender,
            "client_id": m.client_id,
            "body": m.body,
            "sent_at": m.sent_at,
        }),
        Event::Confidential(c) => {
            json!({"type": "confidential", "conversation": conversation(c)})
        }
        Event::Item(i) => json!({
            "type": "item",
            "from": i.owner,
            "node": i.node,
            "id": i.id,
            "payload": i.payload,
        }),
        Event::Endpoint(_) => Value::Null,
    }
}
