-- Operator commands acted on, by their id: a signed command replayed on the command topic
-- is refused (replayed_command), never acted on twice.
CREATE TABLE IF NOT EXISTS migration.operator_commands (
  command_id  TEXT PRIMARY KEY,
  school_id   TEXT NOT NULL,
  action      TEXT NOT NULL,
  actor       TEXT NOT NULL,
  issued_at   TIMESTAMPTZ NOT NULL,
  handled_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
