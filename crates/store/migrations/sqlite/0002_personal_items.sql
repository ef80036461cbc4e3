-- Items a person publishes about themselves (XMPP personal eventing: avatars, OMEMO device
-- lists and bundles, nicknames), by node and item id. They go with the account.
CREATE TABLE personal_items (
    owner INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    item TEXT NOT NULL,
    payload TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (owner, node, item)
) WITHOUT ROWID;

CREATE INDEX personal_items_newest ON personal_items (owner, node, updated_at);
