-- Run webhooks [ours] (the PostgreSQL twin of migrations/sqlite/0004): the signing secret of
-- each user, the webhook URL a run was created with, and the outbox of deliveries.
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
    run_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES enrichment_runs(id),
    url     TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id                TEXT COLLATE "C" PRIMARY KEY,
    event_id          TEXT NOT NULL UNIQUE,
    run_id            TEXT COLLATE "C" NOT NULL REFERENCES enrichment_runs(id),
    type              TEXT NOT NULL,
    url               TEXT NOT NULL,
    -- pending | delivered | failed
    status            TEXT NOT NULL,
    -- The event's JSON body, fixed at the first attempt so every retry sends the same bytes.
    payload           TEXT,
    attempts          BIGINT NOT NULL DEFAULT 0,
    last_status_code  BIGINT,
    last_error        TEXT,
    last_attempt_at   TEXT,
    -- Unix milliseconds, like the worker's other clocks.
    next_attempt_at   BIGINT NOT NULL,
    first_due_at      BIGINT NOT NULL,
    delivered_at      TEXT,
    lease_owner       TEXT,
    lease_token       TEXT,
    lease_expires_at  BIGINT,
    created_at        TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_run ON webhook_deliveries(run_id, created_at);

-- Queue a delivery for the run `ended` (already terminal) if it has a hook.
CREATE FUNCTION puffle_queue_run_webhook(ended TEXT) RETURNS void LANGUAGE sql AS $$
    INSERT INTO webhook_deliveries (id, event_id, run_id, type, url, status, next_attempt_at,
        first_due_at, created_at)
    SELECT gen_random_uuid()::text, gen_random_uuid()::text, r.id,
        'enrichment.run.' || r.status, w.url, 'pending',
        (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
        (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
        COALESCE(r.completed_at, r.updated_at)
    FROM run_webhooks w JOIN enrichment_runs r ON r.id = w.run_id
    WHERE w.run_id = ended AND r.status IN ('completed', 'failed', 'cancelled');
$$;

CREATE FUNCTION puffle_webhook_on_run_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM puffle_queue_run_webhook(NEW.id);
    RETURN NULL;
END
$$;

CREATE FUNCTION puffle_webhook_on_late_hook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM puffle_queue_run_webhook(NEW.run_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_on_run_end AFTER UPDATE OF status ON enrichment_runs
    FOR EACH ROW
    WHEN (OLD.status IN ('pending', 'running')
        AND NEW.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION puffle_webhook_on_run_end();

CREATE TRIGGER webhook_on_late_hook AFTER INSERT ON run_webhooks
    FOR EACH ROW EXECUTE FUNCTION puffle_webhook_on_late_hook();
