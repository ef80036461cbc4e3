-- The first schema: every table the hub needs (the same model as the SQLite schema).
--
-- Journal positions are the `pos` columns of `messages` and `account_events`; the writer
-- assigns them from one counter, so the two tables together form one ordered journal.

CREATE TABLE accounts (
    -- An identity column never hands out a number twice, so the number of a deleted account
    -- never points at a new person.
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    realm TEXT NOT NULL,
    -- SCRAM verifiers in switchboard_core::credentials::encode_verifier's text form.
    scram_sha1 TEXT NOT NULL,
    scram_sha256 TEXT NOT NULL,
    visibility TEXT NOT NULL,
    message_policy TEXT NOT NULL,
    display_name TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX accounts_by_realm ON accounts (realm, address);

CREATE TABLE logins (
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    csrf_hash BYTEA,
    created_at BIGINT NOT NULL,
    last_used BIGINT NOT NULL,
    user_agent TEXT
);
CREATE INDEX logins_by_user ON logins (user_id);

-- The peer is an address, not an account number: it may live on another realm or server.
CREATE TABLE contacts (
    owner BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    peer TEXT NOT NULL,
    sub_to TEXT NOT NULL,
    sub_from TEXT NOT NULL,
    name TEXT,
    chosen BOOLEAN NOT NULL,
    PRIMARY KEY (owner, peer)
);
-- Deleting an account removes the entries other people have for its address.
CREATE INDEX contacts_by_peer ON contacts (peer);

CREATE TABLE blocks (
    owner BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    peer TEXT NOT NULL,
    PRIMARY KEY (owner, peer)
);

CREATE TABLE conversations (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT,
    confidential BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The highest sequence number ever used when messages were deleted from the conversation,
    -- so that numbers are never given out twice; see the SQLite schema.
    seq_floor BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE members (
    conversation UUID NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    delivered_seq BIGINT NOT NULL DEFAULT 0,
    read_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation, user_id)
);
CREATE INDEX members_by_user ON members (user_id, conversation);

CREATE TABLE messages (
    pos BIGINT PRIMARY KEY,
    id UUID NOT NULL,
    conversation UUID NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    sender BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    sender_address TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);
-- History, undelivered messages and the last number.
CREATE UNIQUE INDEX messages_by_seq ON messages (conversation, seq);
-- Replay: the messages of each of a person's conversations past a position.
CREATE INDEX messages_by_pos ON messages (conversation, pos);
-- A resend with the same client id is recognised, not stored again. Carrying the
-- conversation lets "has this person written here" (the stranger rule) and deleting an
-- account be answered from the index alone, without a separate (sender, conversation) index
-- to maintain on every message.
CREATE UNIQUE INDEX messages_by_client_id ON messages (sender, client_id) INCLUDE (conversation);

CREATE TABLE account_events (
    pos BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    payload JSONB NOT NULL
);
CREATE INDEX account_events_by_user ON account_events (user_id, pos);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    login TEXT NOT NULL,
    node TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    presence_show TEXT NOT NULL,
    presence_status TEXT,
    acked_pos BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen);

-- Counters that must survive the deletion of the rows they were derived from.
-- `pos_floor`: the highest position ever assigned when journal rows were deleted.
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
