-- When ingest received the status a device's row holds. Two batches in flight (or two ingest
-- replicas) may commit in either order; a status older than the one stored must not replace it,
-- or a device that went offline after a reconnect can stay "online" for good.
ALTER TABLE devices ADD COLUMN status_at timestamptz;
