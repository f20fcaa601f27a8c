-- Accounts, credits, leads, lists and memberships (the PostgreSQL twin of
-- migrations/sqlite/0001_foundation.sql: same tables and columns, so the code above the store
-- and the other backend's queries read alike).
-- Timestamps are TEXT in the API's own format (RFC 3339 UTC, milliseconds), so they sort and
-- compare as strings. Ids are UUIDv7 strings: their order is creation order. JSON documents are
-- TEXT holding serialized JSON, as on SQLite. Integers (and 0/1 flags) are BIGINT so they decode
-- as i64 on both backends.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    balance     BIGINT NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    email         TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    created_at    TEXT NOT NULL
);
CREATE INDEX users_workspace ON users(workspace_id);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    prefix      TEXT NOT NULL,
    key_hash    BYTEA NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX api_keys_prefix ON api_keys(prefix);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE credit_ledger (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    amount        BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    run_id        TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX credit_ledger_workspace ON credit_ledger(workspace_id, id);

-- A lead: its base fields as one JSON document, its attributes as another, and lowercased
-- copies of the searchable text for the GET /api/leads filters.
CREATE TABLE leads (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    type          TEXT NOT NULL CHECK (type IN ('person', 'company')),
    fields        TEXT NOT NULL,
    attributes    TEXT NOT NULL DEFAULT '{}',
    s_name        TEXT NOT NULL DEFAULT '',
    s_title       TEXT NOT NULL DEFAULT '',
    s_company     TEXT NOT NULL DEFAULT '',
    s_domain      TEXT NOT NULL DEFAULT '',
    s_industry    TEXT NOT NULL DEFAULT '',
    s_location    TEXT NOT NULL DEFAULT '',
    s_emails      TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX leads_workspace ON leads(workspace_id, id);

-- The identities under which two leads of a workspace are one (see LeadFields::dedupe_keys).
CREATE TABLE lead_keys (
    workspace_id  TEXT NOT NULL,
    key           TEXT NOT NULL,
    lead_id       TEXT NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, key)
);
CREATE INDEX lead_keys_lead ON lead_keys(lead_id);

CREATE TABLE lists (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    name          TEXT NOT NULL,
    description   TEXT,
    lead_type     TEXT NOT NULL CHECK (lead_type IN ('person', 'company', 'mixed')),
    is_all        BIGINT NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX lists_workspace ON lists(workspace_id, id);

-- lead_type is the member's type, copied (it never changes) so list counts need no join.
CREATE TABLE memberships (
    id          TEXT PRIMARY KEY,
    list_id     TEXT NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
    lead_id     TEXT NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    lead_type   TEXT NOT NULL,
    attributes  TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    UNIQUE (list_id, lead_id)
);
CREATE INDEX memberships_lead ON memberships(lead_id);
-- Covers the per-type member counts of every list answer.
CREATE INDEX memberships_list_type ON memberships(list_id, lead_type);
