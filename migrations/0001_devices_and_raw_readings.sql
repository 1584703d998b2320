-- The device registry, one raw hypertable per kind, and the rejections store.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE devices (
    device_id   text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    kind        text NOT NULL CHECK (kind IN ('traffic', 'energy', 'air')),
    district    text NOT NULL CHECK (district IN ('gate', 'golden', 'growing', 'green')),
    lat         double precision CHECK (lat BETWEEN -90 AND 90),
    lon         double precision CHECK (lon BETWEEN -180 AND 180),
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled     boolean NOT NULL DEFAULT true,
    status      text NOT NULL DEFAULT 'unknown' CHECK (status IN ('unknown', 'online', 'offline')),
    last_seen   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((lat IS NULL) = (lon IS NULL))
);
CREATE INDEX devices_kind_district_idx ON devices (kind, district);

-- Metric columns mirror devices/contract.py; tests/test_migrations.py checks they agree.
CREATE TABLE traffic_readings (
    device_id            text NOT NULL,
    ts                   timestamptz NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    vehicle_count        integer,
    interval_s           double precision,
    avg_speed_kmh        double precision,
    occupancy_pct        double precision,
    heavy_vehicle_count  integer,
    CONSTRAINT traffic_readings_device_ts_key UNIQUE (device_id, ts)
);
SELECT create_hypertable('traffic_readings', by_range('ts', INTERVAL '1 day'));

CREATE TABLE energy_readings (
    device_id     text NOT NULL,
    ts            timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    energy_kwh    double precision,
    power_kw      double precision,
    voltage_v     double precision,
    current_a     double precision,
    power_factor  double precision,
    CONSTRAINT energy_readings_device_ts_key UNIQUE (device_id, ts)
);
SELECT create_hypertable('energy_readings', by_range('ts', INTERVAL '1 day'));

CREATE TABLE air_readings (
    device_id      text NOT NULL,
    ts             timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    pm2_5          double precision,
    pm10           double precision,
    no2            double precision,
    so2            double precision,
    o3             double precision,
    co             double precision,
    temperature_c  double precision,
    humidity_pct   double precision,
    pressure_hpa   double precision,
    CONSTRAINT air_readings_device_ts_key UNIQUE (device_id, ts)
);
SELECT create_hypertable('air_readings', by_range('ts', INTERVAL '1 day'));

-- Every refused reading is kept with its reason and raw bytes: the store is the dead-letter queue.
CREATE TABLE ingest_rejections (
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    kind         text,
    device_id    text,
    reason       text NOT NULL,
    detail       text NOT NULL,
    payload      bytea NOT NULL
);
SELECT create_hypertable('ingest_rejections', by_range('received_at', INTERVAL '1 day'));
CREATE INDEX ingest_rejections_device_idx ON ingest_rejections (device_id, received_at DESC);
CREATE INDEX ingest_rejections_reason_idx ON ingest_rejections (reason, received_at DESC);
