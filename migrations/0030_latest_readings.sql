-- The newest stored reading of each device, per kind: what GET /latest lists, one row a device
-- instead of one index probe per device into every chunk of raw. Ingest upserts it in the
-- transaction that stores the readings, and only with a newer ts, so a late or redelivered
-- reading never replaces a newer one; rows are the raw table's own columns.
CREATE TABLE traffic_latest (LIKE traffic_readings INCLUDING DEFAULTS, PRIMARY KEY (device_id));
CREATE TABLE energy_latest (LIKE energy_readings INCLUDING DEFAULTS, PRIMARY KEY (device_id));
CREATE TABLE air_latest (LIKE air_readings INCLUDING DEFAULTS, PRIMARY KEY (device_id));

-- Readings stored before this migration.
INSERT INTO traffic_latest
    SELECT DISTINCT ON (device_id) * FROM traffic_readings ORDER BY device_id, ts DESC;
INSERT INTO energy_latest
    SELECT DISTINCT ON (device_id) * FROM energy_readings ORDER BY device_id, ts DESC;
INSERT INTO air_latest
    SELECT DISTINCT ON (device_id) * FROM air_readings ORDER BY device_id, ts DESC;
