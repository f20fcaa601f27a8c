-- The result cache of configured providers (puffle.toml `cache_ttl_seconds`): one row per
-- provider and normalized request, shared by every process on this database. `key` is a SHA-256
-- of the request (secret header values only hashed); rows past `expires_at` (unix ms) are
-- ignored and pruned now and then.

CREATE TABLE provider_cache (
    key         TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    answer      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX provider_cache_expires ON provider_cache (expires_at);
