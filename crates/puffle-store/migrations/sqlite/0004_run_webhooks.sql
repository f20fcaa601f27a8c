-- Run webhooks [ours]: the signing secret of each user, the webhook URL a run was created with,
-- and the outbox of deliveries.
--
-- A delivery row is written by a trigger in the same transaction as the status change that ends
-- a run (whoever makes it: the worker's last item, a run-level failure, a cancel), so no event is
-- lost if the process dies right after the commit, and no code path that ends a run can forget
-- it. A hook attached to a run that is already terminal (an empty scope is `completed` at
-- creation) gets its delivery from the second trigger.

-- The secret is kept as is, not hashed: signing needs it. It is shown once, when created.
CREATE TABLE webhook_secrets (
    user_id     TEXT PRIMARY KEY REFERENCES users(id),
    secret      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE run_webhooks (
    run_id  TEXT PRIMARY KEY REFERENCES enrichment_runs(id),
    url     TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    event_id          TEXT NOT NULL UNIQUE,
    run_id            TEXT NOT NULL REFERENCES enrichment_runs(id),
    type              TEXT NOT NULL,
    url               TEXT NOT NULL,
    -- pending | delivered | failed
    status            TEXT NOT NULL,
    -- The event's JSON body, fixed at the first attempt so every retry sends the same bytes.
    payload           TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_status_code  INTEGER,
    last_error        TEXT,
    last_attempt_at   TEXT,
    -- Unix milliseconds, like the worker's other clocks.
    next_attempt_at   INTEGER NOT NULL,
    first_due_at      INTEGER NOT NULL,
    delivered_at      TEXT,
    lease_owner       TEXT,
    lease_token       TEXT,
    lease_expires_at  INTEGER,
    created_at        TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_run ON webhook_deliveries(run_id, created_at);

CREATE TRIGGER webhook_on_run_end AFTER UPDATE OF status ON enrichment_runs
WHEN OLD.status IN ('pending', 'running')
    AND NEW.status IN ('completed', 'failed', 'cancelled')
BEGIN
    INSERT INTO webhook_deliveries (id, event_id, run_id, type, url, status, next_attempt_at,
        first_due_at, created_at)
    SELECT
        lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
            substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + abs(random() % 4), 1) ||
            substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
        lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
            substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + abs(random() % 4), 1) ||
            substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
        w.run_id, 'enrichment.run.' || NEW.status, w.url, 'pending',
        CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER),
        CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER),
        COALESCE(NEW.completed_at, NEW.updated_at)
    FROM run_webhooks w WHERE w.run_id = NEW.id;
END;

CREATE TRIGGER webhook_on_late_hook AFTER INSERT ON run_webhooks
WHEN (SELECT status FROM enrichment_runs WHERE id = NEW.run_id)
    IN ('completed', 'failed', 'cancelled')
BEGIN
    INSERT INTO webhook_deliveries (id, event_id, run_id, type, url, status, next_attempt_at,
        first_due_at, created_at)
    SELECT
        lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
            substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + abs(random() % 4), 1) ||
            substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
        lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
            substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + abs(random() % 4), 1) ||
            substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
        NEW.run_id, 'enrichment.run.' || r.status, NEW.url, 'pending',
        CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER),
        CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER),
        COALESCE(r.completed_at, r.updated_at)
    FROM enrichment_runs r WHERE r.id = NEW.run_id;
END;
