//! The hub's vocabulary: identifiers, presence, contacts, conversations, messages and the
//! events that reach a person's sessions. Every line translates its protocol into these types.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::address::Address;

/// Milliseconds since the Unix epoch. One clock unit everywhere keeps the store simple.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A store-assigned account number. Internal only: lines and APIs speak [`Address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub i64);

/// A position in the store's single ordered journal of durable events (messages and account
/// events). A session resumes "after position N" and is replayed everything past it that
/// concerns its person. Positions are strictly increasing in commit order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Pos(pub i64);

/// A message's number inside its conversation, 1, 2, 3, … Delivery and read state are cursors
/// over these numbers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Seq(pub i64);

/// A conversation's universally unique identifier (seed 003: E1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConversationId(pub Uuid);

/// Namespace for direct conversation ids: the id of the conversation between two people is
/// derived from their two addresses, so creating it is idempotent on every node without a
/// lookup or a race.
const DIRECT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_5a3e_9b2f_4c1e_8f7a_2b3c_4d5e_6f70);

impl ConversationId {
    pub fn random() -> ConversationId {
        ConversationId(Uuid::new_v4())
    }

    /// The one direct conversation between `a` and `b` (order does not matter).
    pub fn direct(a: &Address, b: &Address) -> ConversationId {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        let key = format!("{x}\n{y}");
        ConversationId(Uuid::new_v5(&DIRECT_NAMESPACE, key.as_bytes()))
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The server's own stable id for a stored message (XEP-0359 stanza-id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub Uuid);

impl MessageId {
    pub fn random() -> MessageId {
        MessageId(Uuid::new_v4())
    }
}

/// How available a person is. The order is "most available first", which is how several
/// endpoints' presences combine into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Available,
    Away,
    /// Do not disturb.
    Dnd,
    /// Extended away.
    Xa,
    Offline,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "available",
            Availability::Away => "away",
            Availability::Dnd => "dnd",
            Availability::Xa => "xa",
            Availability::Offline => "offline",
        }
    }

    pub fn parse(text: &str) -> Option<Availability> {
        Some(match text {
            "available" => Availability::Available,
            "away" => Availability::Away,
            "dnd" => Availability::Dnd,
            "xa" => Availability::Xa,
            "offline" => Availability::Offline,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub show: Availability,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl Presence {
    pub fn offline() -> Presence {
        Presence {
            show: Availability::Offline,
            status: None,
        }
    }

    pub fn available() -> Presence {
        Presence {
            show: Availability::Available,
            status: None,
        }
    }
}

/// Who may see a person's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Every contact who is subscribed (accepted) to it.
    #[default]
    Contacts,
    /// Only subscribed contacts marked as chosen.
    Chosen,
    /// Nobody: the person appears offline to everyone.
    Nobody,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Contacts => "contacts",
            Visibility::Chosen => "chosen",
            Visibility::Nobody => "nobody",
        }
    }

    pub fn parse(text: &str) -> Option<Visibility> {
        Some(match text {
            "contacts" => Visibility::Contacts,
            "chosen" => Visibility::Chosen,
            "nobody" => Visibility::Nobody,
            _ => return None,
        })
    }
}

/// Who may start a conversation with a person (the stranger policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessagePolicy {
    Anyone,
    Contacts,
}

impl MessagePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MessagePolicy::Anyone => "anyone",
            MessagePolicy::Contacts => "contacts",
        }
    }

    pub fn parse(text: &str) -> Option<MessagePolicy> {
        Some(match text {
            "anyone" => MessagePolicy::Anyone,
            "contacts" => MessagePolicy::Contacts,
            _ => return None,
        })
    }
}

/// One direction of a presence subscription, as XMPP defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubState {
    #[default]
    None,
    /// Asked for and not yet answered.
    Pending,
    Accepted,
}

impl SubState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubState::None => "none",
            SubState::Pending => "pending",
            SubState::Accepted => "accepted",
        }
    }

    pub fn parse(text: &str) -> Option<SubState> {
        Some(match text {
            "none" => SubState::None,
            "pending" => SubState::Pending,
            "accepted" => SubState::Accepted,
            _ => return None,
        })
    }
}

/// One entry of a person's contact list (an XMPP roster item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub owner: UserId,
    pub peer: Address,
    /// Whether the owner receives the peer's presence ("to" in XMPP).
    pub to: SubState,
    /// Whether the peer receives the owner's presence ("from" in XMPP). `Pending` here is an
    /// incoming request waiting for the owner's answer.
    pub from: SubState,
    pub name: Option<String>,
    /// Whether the peer is among the owner's chosen contacts for [`Visibility::Chosen`].
    pub chosen: bool,
}

impl Contact {
    pub fn new(owner: UserId, peer: Address) -> Contact {
        Contact {
            owner,
            peer,
            to: SubState::None,
            from: SubState::None,
            name: None,
            chosen: false,
        }
    }
}

/// A person's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSettings {
    pub visibility: Visibility,
    pub message_policy: MessagePolicy,
    pub display_name: Option<String>,
}

/// A SCRAM verifier (RFC 5802): what the server keeps instead of a password. XMPP apps log in
/// with SCRAM against it, and the web login checks a password against it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub scram_sha1: ScramVerifier,
    pub scram_sha256: ScramVerifier,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    pub address: Address,
    pub credentials: Credentials,
    pub settings: AccountSettings,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub address: Address,
    pub credentials: Credentials,
    pub settings: AccountSettings,
}

/// What kind of client a login was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginKind {
    /// A program holding a bearer token.
    Bearer,
    /// A browser holding an HttpOnly cookie plus a CSRF token.
    Browser,
    /// An XMPP client that proved its identity with SASL; the login lasts as long as its
    /// session (its token is never shown to anyone).
    Xmpp,
}

impl LoginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginKind::Bearer => "bearer",
            LoginKind::Browser => "browser",
            LoginKind::Xmpp => "xmpp",
        }
    }

    pub fn parse(text: &str) -> Option<LoginKind> {
        Some(match text {
            "bearer" => LoginKind::Bearer,
            "browser" => LoginKind::Browser,
            "xmpp" => LoginKind::Xmpp,
            _ => return None,
        })
    }
}

/// A proof of identity held by a client. Only hashes of the secrets are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    /// Random public id, used to list and revoke logins.
    pub id: String,
    pub user: UserId,
    pub kind: LoginKind,
    pub token_hash: Vec<u8>,
    pub csrf_hash: Option<Vec<u8>>,
    pub created_at: Millis,
    pub last_used: Millis,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }

    pub fn parse(text: &str) -> Option<ConversationKind> {
        Some(match text {
            "direct" => ConversationKind::Direct,
            "group" => ConversationKind::Group,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub title: Option<String>,
    /// Relayed, never stored. Confidential conversations never reach the store at all.
    pub confidential: bool,
    pub created_by: Address,
    pub created_at: Millis,
}

/// One member of a conversation's audience with their delivery and read cursors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub address: Address,
    /// Every message up to this number reached at least one of the member's endpoints.
    pub delivered: Seq,
    /// The member has read every message up to this number.
    pub read: Seq,
}

/// A conversation as one member sees it in their list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationEntry {
    pub conversation: Conversation,
    pub me: Member,
    pub last_seq: Seq,
}

/// A message to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub sender: UserId,
    pub sender_address: Address,
    /// The sender's own id for the message; a resend with the same id is not stored again.
    pub client_id: String,
    pub body: String,
    pub sent_at: Millis,
    /// The one endpoint the sender addressed (an XMPP full address's resource), if any. Not
    /// stored: it only steers live delivery (XEP-0280 carbons).
    pub to_endpoint: Option<String>,
    /// The sender's endpoint it came from (an XMPP resource), for the sender's other
    /// endpoints' copies. Not stored either.
    pub from_endpoint: Option<String>,
    /// The sender asked that the person's other endpoints get no copies (XEP-0280
    /// `<private/>`). Live delivery only.
    pub private: bool,
}

/// A message as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub seq: Seq,
    pub pos: Pos,
    pub sender: Address,
    pub client_id: String,
    pub body: String,
    pub sent_at: Millis,
    /// See [`NewMessage::to_endpoint`]; `None` in anything read back from the store.
    #[serde(skip)]
    pub to_endpoint: Option<String>,
    #[serde(skip)]
    pub from_endpoint: Option<String>,
    #[serde(skip)]
    pub private: bool,
}

/// A durable event about a person's account, replayed on resumption like messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountEvent {
    /// A contact list entry changed (request, answer, removal shows as `removed`).
    Contact {
        peer: Address,
        to: SubState,
        from: SubState,
        name: Option<String>,
        chosen: bool,
        removed: bool,
    },
    /// The person became a member of a conversation.
    Joined { conversation: ConversationId },
    /// The person left or was removed from a conversation.
    Left { conversation: ConversationId },
    /// The person's own settings changed (on another endpoint).
    Settings {
        visibility: Visibility,
        message_policy: MessagePolicy,
        display_name: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAccountEvent {
    pub pos: Pos,
    pub user: UserId,
    pub at: Millis,
    pub event: AccountEvent,
}

/// A state change that goes through the journal together with the account events it causes,
/// so that both are committed atomically and in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PutContact(Contact),
    DeleteContact {
        owner: UserId,
        peer: Address,
    },
    Block {
        owner: UserId,
        peer: Address,
    },
    Unblock {
        owner: UserId,
        peer: Address,
    },
    /// Creates the conversation with these members if it does not exist yet (idempotent).
    CreateConversation {
        conversation: Conversation,
        members: Vec<(UserId, Address)>,
    },
    AddMember {
        conversation: ConversationId,
        user: UserId,
        address: Address,
    },
    RemoveMember {
        conversation: ConversationId,
        user: UserId,
    },
    PutSettings {
        user: UserId,
        settings: AccountSettings,
    },
}

/// One entry written to the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalEntry {
    Message(NewMessage),
    Changes {
        changes: Vec<Change>,
        events: Vec<(UserId, AccountEvent)>,
    },
}

/// What the store did with one journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOutcome {
    Message(Appended),
    Changes(Vec<StoredAccountEvent>),
}

/// The result of appending a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub message: StoredMessage,
    /// The same (sender, client id) was stored before: `message` is that earlier message and
    /// nothing new was written.
    pub duplicate: bool,
}

/// A cursor move for one member of one conversation. Cursors only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorUpdate {
    pub conversation: ConversationId,
    pub user: UserId,
    pub delivered: Option<Seq>,
    pub read: Option<Seq>,
}

/// A durable item replayed to a resuming session, in journal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    Message(StoredMessage),
    Account(StoredAccountEvent),
}

impl Replayed {
    pub fn pos(&self) -> Pos {
        match self {
            Replayed::Message(m) => m.pos,
            Replayed::Account(e) => e.pos,
        }
    }
}

/// An unguessable session identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server-held session as the store keeps it, so that it survives a restart and can be found
/// from any node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user: UserId,
    pub login: String,
    /// The node that holds the session's live object.
    pub node: String,
    pub created_at: Millis,
    /// When the client last made a request (seed 003: E8).
    pub last_seen: Millis,
    pub presence: Presence,
    /// The journal position the client has acknowledged.
    pub acked: Pos,
}

/// An item a person published about themselves (an XMPP PEP item): an avatar, an OMEMO
/// device list or bundle, a nickname. The payload is kept as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalItem {
    pub node: String,
    pub id: String,
    pub payload: String,
    pub updated_at: Millis,
}

/// Which cursor a receipt reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// A typing state (XEP-0085 chat states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Typing {
    Composing,
    Paused,
    Active,
}

/// A message relayed in a confidential conversation: never stored, so it has no position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedMessage {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub sender: Address,
    pub client_id: String,
    pub body: String,
    pub sent_at: Millis,
}

/// A person's presence as one viewer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub from: Address,
    pub presence: Presence,
}

/// A member's delivery or read cursor moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptUpdate {
    pub conversation: ConversationId,
    pub member: Address,
    pub kind: ReceiptKind,
    pub upto: Seq,
}

/// Someone is typing (or stopped) in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingUpdate {
    pub conversation: ConversationId,
    pub from: Address,
    pub state: Typing,
}

/// A person published, replaced or retracted an item about themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemUpdate {
    pub owner: Address,
    pub node: String,
    pub id: String,
    /// `None`: the item was retracted.
    pub payload: Option<String>,
}

/// A stanza one endpoint addressed to one endpoint of a person (an XMPP IQ to a full
/// address), or to all of a line's endpoints of the person (XMPP directed presence to a bare
/// address): relayed live to that person's sessions, never stored. Only the line that owns
/// the endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStanza {
    pub from: Address,
    pub from_endpoint: String,
    /// `None`: every endpoint of the line.
    pub to_endpoint: Option<String>,
    /// The stanza in the line's own wire format.
    pub payload: String,
}

/// What the hub sends to a session. Durable events carry a journal position; the others are
/// live only and are replaced by a snapshot on resumption.
///
/// Every variant is one `Arc`, so an event is two words: it is queued per session (and cloned
/// per recipient), and each session's queue reserves room for a block of events up front, which
/// matters for the memory of idle sessions.
#[derive(Debug, Clone)]
pub enum Event {
    Message(Arc<StoredMessage>),
    Account(Arc<StoredAccountEvent>),
    Presence(Arc<PresenceUpdate>),
    Receipt(Arc<ReceiptUpdate>),
    Typing(Arc<TypingUpdate>),
    Relayed(Arc<RelayedMessage>),
    /// The person was added to a confidential conversation (which has no durable record).
    Confidential(Arc<Conversation>),
    /// A contact (or the person) published or retracted a personal item.
    Item(Arc<ItemUpdate>),
    /// A stanza for one endpoint of the person.
    Endpoint(Arc<EndpointStanza>),
}

impl Event {
    /// The journal position of a durable event.
    pub fn pos(&self) -> Option<Pos> {
        match self {
            Event::Message(m) => Some(m.pos),
            Event::Account(e) => Some(e.pos),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_two_words() {
        assert_eq!(
            std::mem::size_of::<Event>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
