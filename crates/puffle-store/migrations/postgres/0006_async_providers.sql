-- Async provider steps (docs/providers.md "Async steps"): an item that submitted a job waits as
-- `pending` with the vendor's job id in provider_submission_id (0002). When it submitted (unix ms,
-- for max_wait_seconds) and a callback's body waiting to be read by the worker live here.
ALTER TABLE enrichment_items ADD COLUMN provider_submitted_at BIGINT;
ALTER TABLE enrichment_items ADD COLUMN provider_callback TEXT;
-- The callback finds its item by provider and job id.
CREATE INDEX enrichment_items_submission ON enrichment_items (provider, provider_submission_id)
    WHERE provider_submission_id IS NOT NULL;
