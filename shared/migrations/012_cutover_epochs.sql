-- Issue 13: a fencing token for cutovers. The coordinator that takes a running attempt up
-- (it holds the school's cutover lease) moves its epoch on; every write of the attempt
-- (its steps, the clients' mode, its end) is made only while the epoch is still the one it
-- claimed, under the attempt row's lock. A coordinator that lost its lease in the middle of
-- a long step finds the epoch moved and writes nothing more.
ALTER TABLE migration.cutovers ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0;
