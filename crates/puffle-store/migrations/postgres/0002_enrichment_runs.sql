-- Enrichment runs and their items (the PostgreSQL twin of migrations/sqlite/0002).
-- Item counts per status live on the run and change in the same transaction as the items, so
-- `counts` is exact at every moment and costs one row read. Times the worker compares
-- (due_at, lease_expires_at) are unix milliseconds; the API's timestamps stay RFC 3339 text.
-- Ids use the "C" collation so keyset pages (`id > cursor ORDER BY id`) follow byte order, as on
-- SQLite, whatever the cluster's locale.

CREATE TABLE enrichment_runs (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    workspace_id         TEXT NOT NULL REFERENCES workspaces(id),
    user_id              TEXT NOT NULL REFERENCES users(id),
    status               TEXT NOT NULL,
    mode                 TEXT NOT NULL,
    enrichment_slug      TEXT NOT NULL,
    enrichment_snapshot  TEXT NOT NULL,
    subject              TEXT NOT NULL,
    scope_type           TEXT NOT NULL,
    list_id              TEXT,
    scope_requested      TEXT NOT NULL,
    resolved_count       BIGINT NOT NULL,
    output_target        TEXT NOT NULL,
    attribute_key        TEXT NOT NULL,
    write_policy         TEXT NOT NULL,
    persist_results      BIGINT NOT NULL,
    input                TEXT NOT NULL,
    credit_action        TEXT NOT NULL,
    cost_per_unit        BIGINT NOT NULL,
    total_credits        BIGINT NOT NULL,
    idempotency_key      TEXT,
    display_request      TEXT,
    error                TEXT,
    n_pending            BIGINT NOT NULL DEFAULT 0,
    n_running            BIGINT NOT NULL DEFAULT 0,
    n_completed          BIGINT NOT NULL DEFAULT 0,
    n_skipped            BIGINT NOT NULL DEFAULT 0,
    n_failed             BIGINT NOT NULL DEFAULT 0,
    last_claimed_at      BIGINT NOT NULL DEFAULT 0,
    started_at           TEXT,
    completed_at         TEXT,
    cancelled_at         TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
-- Concurrent duplicates of one idempotency key (from any process) end with one run: the second
-- insert waits for the first and then conflicts.
CREATE UNIQUE INDEX enrichment_runs_idempotency
    ON enrichment_runs(user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Runs with work left, for the worker's round-robin claim.
CREATE INDEX enrichment_runs_active ON enrichment_runs(last_claimed_at, id)
    WHERE status IN ('pending', 'running');

CREATE TABLE enrichment_items (
    id                      TEXT COLLATE "C" PRIMARY KEY,
    run_id                  TEXT COLLATE "C" NOT NULL REFERENCES enrichment_runs(id),
    lead_id                 TEXT NOT NULL,
    list_id                 TEXT,
    membership_id           TEXT,
    status                  TEXT NOT NULL,
    result                  TEXT,
    skipped_reason          TEXT,
    error                   TEXT,
    attempts                BIGINT NOT NULL DEFAULT 0,
    input_snapshot          TEXT,
    lead_snapshot           TEXT,
    raw_result              TEXT,
    provider                TEXT,
    provider_submission_id  TEXT,
    due_at                  BIGINT NOT NULL DEFAULT 0,
    lease_owner             TEXT,
    -- New at every claim: a finish must present it, so an execution from an earlier lease
    -- (even of the same worker) can never record an outcome.
    lease_token             TEXT,
    lease_expires_at        BIGINT,
    started_at              TEXT,
    completed_at            TEXT,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
-- Pages of a run's items (keyset on id), optionally by status or lead; (run_id, status, id) is
-- also what a claim scans for a run's pending items.
CREATE INDEX enrichment_items_run ON enrichment_items(run_id, id);
CREATE INDEX enrichment_items_run_status ON enrichment_items(run_id, status, id);
CREATE INDEX enrichment_items_run_lead ON enrichment_items(run_id, lead_id);
-- Leases to rescue when a worker dies, and a worker's leases to extend.
CREATE INDEX enrichment_items_leased ON enrichment_items(lease_expires_at)
    WHERE status = 'running';
CREATE INDEX enrichment_items_owner ON enrichment_items(lease_owner)
    WHERE status = 'running';
