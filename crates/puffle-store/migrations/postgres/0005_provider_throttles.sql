-- Provider throttles shared by a fleet (the PostgreSQL twin of migrations/sqlite/0005).
-- One row per provider, locked by every taker of a slot (so takers of one provider are
-- serialized across processes) and carrying the pause a `Retry-After` asked for. One row per
-- provider call: when it started, or once released when it ended (rate windows count a call while
-- in flight and until a window's length after its end), and, while in flight, until when its
-- holder's lease runs (NULL once released; an expired lease is no longer in flight, so a killed
-- worker's slots come back). Times are unix milliseconds of the database's clock.

CREATE TABLE throttle_providers (
    provider         TEXT PRIMARY KEY,
    paused_until_ms  BIGINT
);

CREATE TABLE throttle_slots (
    id                TEXT PRIMARY KEY,
    provider          TEXT NOT NULL,
    holder            TEXT NOT NULL,
    started_at_ms     BIGINT NOT NULL,
    lease_expires_ms  BIGINT
);

CREATE INDEX throttle_slots_by_start ON throttle_slots (provider, started_at_ms);
CREATE INDEX throttle_slots_in_flight ON throttle_slots (provider, lease_expires_ms)
    WHERE lease_expires_ms IS NOT NULL;
