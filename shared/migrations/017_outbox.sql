-- The transactional outbox (shared/platform/outbox.py): messages written in the same
-- transaction as the state they announce, published once it commits by the service that
-- wrote them (``origin``: a service drains only its own, the topics it may write), whichever
-- replica drains first; a process that stops between the two leaves them here, and the
-- next drain (every second) sends them.
CREATE TABLE IF NOT EXISTS migration.outbox (
    id         bigserial PRIMARY KEY,
    origin     text        NOT NULL,
    topic      text        NOT NULL,
    key        bytea,
    body       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_by_origin ON migration.outbox (origin, id);
