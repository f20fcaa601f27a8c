-- Provider throttles (the SQLite twin of migrations/postgres/0005). An embedded database has one
-- process, whose throttles stay in memory; these tables give the store operations the same
-- meaning on both backends. One row per provider (its pause); one row per provider call (its
-- start, or once released its end, and its lease while in flight; NULL once released). Times are
-- unix milliseconds.

CREATE TABLE throttle_providers (
    provider         TEXT PRIMARY KEY,
    paused_until_ms  INTEGER
);

CREATE TABLE throttle_slots (
    id                TEXT PRIMARY KEY,
    provider          TEXT NOT NULL,
    holder            TEXT NOT NULL,
    started_at_ms     INTEGER NOT NULL,
    lease_expires_ms  INTEGER
);

CREATE INDEX throttle_slots_by_start ON throttle_slots (provider, started_at_ms);
