//! The one storage interface. Backends live in `switchboard-store` (SQLite, PostgreSQL) and
//! pass the same conformance suite.
//!
//! Writes that create journal positions (messages, account events and the state changes that
//! cause them) go through [`Store::append`] as a batch: the hub's journal task hands over
//! whatever is waiting, the backend commits it in one transaction (group commit) and assigns
//! positions in commit order. Other writes (cursors, sessions, logins) carry no position.

use async_trait::async_trait;

use crate::address::{Address, Realm};
use crate::model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the stored data is not valid: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and metrics: "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    // --- accounts ---
    async fn create_account(&self, account: NewAccount) -> StoreResult<Account>;
    async fn account(&self, id: UserId) -> StoreResult<Option<Account>>;
    async fn account_by_address(&self, address: &Address) -> StoreResult<Option<Account>>;
    /// All accounts, or those of one realm, ordered by address.
    async fn list_accounts(&self, realm: Option<&Realm>) -> StoreResult<Vec<Account>>;
    async fn set_credentials(&self, user: UserId, credentials: Credentials) -> StoreResult<()>;
    /// Removes the account with everything that is only theirs: contacts (both sides'
    /// entries), blocks, logins, sessions, memberships, direct conversations and the messages
    /// they sent. Returns false when there was no such account.
    async fn delete_account(&self, user: UserId) -> StoreResult<bool>;

    // --- logins ---
    async fn create_login(&self, login: LoginRecord) -> StoreResult<()>;
    async fn login_by_token_hash(&self, token_hash: &[u8]) -> StoreResult<Option<LoginRecord>>;
    async fn logins_of(&self, user: UserId) -> StoreResult<Vec<LoginRecord>>;
    async fn touch_login(&self, id: &str, at: Millis) -> StoreResult<()>;
    /// Returns false when there was no such login.
    async fn delete_login(&self, id: &str) -> StoreResult<bool>;
    async fn delete_logins_of(&self, user: UserId) -> StoreResult<()>;

    // --- the journal ---
    /// Commits a batch atomically in one transaction where possible. An entry that fails on
    /// its own (for example a message to a conversation that does not exist) fails alone with
    /// its error; the others are still committed.
    async fn append(
        &self,
        batch: Vec<JournalEntry>,
    ) -> StoreResult<Vec<StoreResult<JournalOutcome>>>;
    /// The highest position committed so far.
    async fn last_pos(&self) -> StoreResult<Pos>;
    /// Messages in the person's conversations and the person's account events with a
    /// position above `after`, in position order, at most `limit`.
    async fn replay(&self, user: UserId, after: Pos, limit: usize) -> StoreResult<Vec<Replayed>>;
    /// Messages from others past the person's delivered cursor in each of their
    /// conversations (the message cache), in position order, at most `limit`.
    async fn undelivered(&self, user: UserId, limit: usize) -> StoreResult<Vec<StoredMessage>>;
    /// Up to `limit` messages of a conversation before `before` (or the newest), oldest first.
    async fn history(
        &self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>>;
    /// Moves cursors forward (never back).
    async fn advance_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()>;

    // --- contacts and blocks ---
    async fn contacts_of(&self, user: UserId) -> StoreResult<Vec<Contact>>;
    async fn contact(&self, owner: UserId, peer: &Address) -> StoreResult<Option<Contact>>;
    async fn is_blocked(&self, owner: UserId, peer: &Address) -> StoreResult<bool>;
    async fn blocks_of(&self, owner: UserId) -> StoreResult<Vec<Address>>;

    // --- conversations ---
    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>>;
    async fn members(&self, id: ConversationId) -> StoreResult<Vec<Member>>;
    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationEntry>>;
    /// Whether the two share a group conversation.
    async fn share_group(&self, a: UserId, b: UserId) -> StoreResult<bool>;
    /// Whether `author` has sent at least one message in `conversation`.
    async fn has_written(&self, author: UserId, conversation: ConversationId) -> StoreResult<bool>;

    // --- personal items (XMPP PEP) ---
    /// Stores an item (replacing one with the same id), keeping at most `keep` newest items
    /// of the node.
    async fn put_personal_item(
        &self,
        owner: UserId,
        item: PersonalItem,
        keep: usize,
    ) -> StoreResult<()>;
    /// The newest `limit` items of a node, newest first.
    async fn personal_items(
        &self,
        owner: UserId,
        node: &str,
        limit: usize,
    ) -> StoreResult<Vec<PersonalItem>>;
    /// Removes one item, or the whole node when `item` is `None`. Returns whether anything
    /// was removed.
    async fn delete_personal_item(
        &self,
        owner: UserId,
        node: &str,
        item: Option<&str>,
    ) -> StoreResult<bool>;

    // --- sessions ---
    async fn put_session(&self, session: SessionRecord) -> StoreResult<()>;
    async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>>;
    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>>;
    /// Records a client's last request time and acknowledged position.
    async fn touch_session(&self, id: &SessionId, last_seen: Millis, acked: Pos)
    -> StoreResult<()>;
    async fn set_session_presence(&self, id: &SessionId, presence: &Presence) -> StoreResult<()>;
    async fn delete_session(&self, id: &SessionId) -> StoreResult<()>;
    /// Deletes sessions whose client was last seen before `before`; returns them.
    async fn expire_sessions(&self, before: Millis) -> StoreResult<Vec<SessionRecord>>;
}
