-- The transactional outbox (shared/platform/outbox.py): messages written in the same
-- transaction as the state they announce, published once it commits, by whichever
-- replica drains first; a process that stops between the two leaves them here, and the
-- next drain (any replica's, every second) sends them.
CREATE TABLE IF NOT EXISTS migration.outbox (
    id         bigserial PRIMARY KEY,
    topic      text        NOT NULL,
    key        bytea,
    body       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
