-- The first schema: every table the hub needs.
--
-- Journal positions are the `pos` columns of `messages` and `account_events`; the writer
-- assigns them from one counter, so the two tables together form one ordered journal.
-- Conversation and message ids are UUIDs stored as 16-byte blobs.

CREATE TABLE accounts (
    -- AUTOINCREMENT so that the number of a deleted account is never given to a new one:
    -- old sessions, events and caches must never point at the wrong person.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL UNIQUE,
    realm TEXT NOT NULL,
    -- SCRAM verifiers in switchboard_core::credentials::encode_verifier's text form.
    scram_sha1 TEXT NOT NULL,
    scram_sha256 TEXT NOT NULL,
    visibility TEXT NOT NULL,
    message_policy TEXT NOT NULL,
    display_name TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX accounts_by_realm ON accounts (realm, address);

CREATE TABLE logins (
    id TEXT PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    csrf_hash BLOB,
    created_at INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    user_agent TEXT
);
CREATE INDEX logins_by_user ON logins (user_id);

-- The peer is an address, not an account number: it may live on another realm or server.
CREATE TABLE contacts (
    owner INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    peer TEXT NOT NULL,
    sub_to TEXT NOT NULL,
    sub_from TEXT NOT NULL,
    name TEXT,
    chosen INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;
-- Deleting an account removes the entries other people have for its address.
CREATE INDEX contacts_by_peer ON contacts (peer);

CREATE TABLE blocks (
    owner INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    peer TEXT NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;

CREATE TABLE conversations (
    id BLOB PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    title TEXT,
    confidential INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- The highest sequence number ever used when messages were deleted from the conversation
    -- (a deleted account's messages in a group), so that numbers are never given out twice
    -- and members' cursors stay meaningful. The last number is the larger of this and the
    -- highest stored `messages.seq`; keeping it here costs nothing per message.
    seq_floor INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE members (
    conversation BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    delivered_seq INTEGER NOT NULL DEFAULT 0,
    read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id, conversation);

-- `pos` is the rowid, so appends go to the end of the table's tree. Within one conversation
-- `seq` and `pos` grow together (the single writer assigns both), so the (conversation, seq)
-- index is also in position order; replay relies on that instead of another index.
CREATE TABLE messages (
    pos INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    conversation BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    sender INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    sender_address TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);
-- History, undelivered messages, the last number and replay.
CREATE UNIQUE INDEX messages_by_seq ON messages (conversation, seq);
-- A resend with the same client id is recognised, not stored again. It also serves deleting
-- an account's messages.
CREATE UNIQUE INDEX messages_by_client_id ON messages (sender, client_id);
-- Deliberately no (sender, conversation) index: each index whose key is not in time order
-- costs about one more page written per message (the messages of a batch land on different
-- pages of it), which measured as a third of the store's throughput. "Has this person
-- written here" is a cold question (the stranger rule) answered from the two indexes above.

CREATE TABLE account_events (
    pos INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    -- The AccountEvent as JSON.
    payload TEXT NOT NULL
);
CREATE INDEX account_events_by_user ON account_events (user_id, pos);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    login TEXT NOT NULL,
    node TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    presence_show TEXT NOT NULL,
    presence_status TEXT,
    acked_pos INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen);

-- Counters that must survive the deletion of the rows they were derived from.
-- `pos_floor`: the highest position ever assigned when journal rows were deleted, so that
-- positions keep growing after a restart even if the newest rows are gone.
CREATE TABLE counters (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
