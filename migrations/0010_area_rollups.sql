-- Area tiers: per district and for the city ('city'), each kind's hour and Almaty-day parts
-- pre-summed over the devices of the area, so a district or city query reads one row per bucket
-- instead of one per device. Kept exact by the rollup worker: when it recomputes a device's
-- dirty minute it re-derives, from the device tiers, every area bucket above it (the device's
-- district and the city). Columns per metric: <m>_n, <m>_min, <m>_max, <m>_sum; a cumulative
-- register keeps <m>_increase (its devices' increases in the bucket, each counted from the
-- device's previous reading). tests/rollups/test_schema.py checks them against the contract.
-- Membership is the registry's current one: a device that changes district (or kind, or is
-- removed) is queued in rollup_area_moves by a trigger, in the same transaction; while a move of
-- a kind is queued its area queries are answered from the device tiers, and the worker
-- re-derives the old and new areas' buckets of that device, then deletes the move.

CREATE TABLE traffic_area_rollup_1h (
    area    text NOT NULL CHECK (area IN ('gate', 'golden', 'growing', 'green', 'city')),
    bucket  timestamptz NOT NULL,
    readings  integer NOT NULL,
    vehicle_count_n  integer NOT NULL,
    vehicle_count_min  integer,
    vehicle_count_max  integer,
    vehicle_count_sum  bigint,
    interval_s_n  integer NOT NULL,
    interval_s_min  double precision,
    interval_s_max  double precision,
    interval_s_sum  double precision,
    avg_speed_kmh_n  integer NOT NULL,
    avg_speed_kmh_min  double precision,
    avg_speed_kmh_max  double precision,
    avg_speed_kmh_sum  double precision,
    occupancy_pct_n  integer NOT NULL,
    occupancy_pct_min  double precision,
    occupancy_pct_max  double precision,
    occupancy_pct_sum  double precision,
    heavy_vehicle_count_n  integer NOT NULL,
    heavy_vehicle_count_min  integer,
    heavy_vehicle_count_max  integer,
    heavy_vehicle_count_sum  bigint,
    CONSTRAINT traffic_area_rollup_1h_area_bucket_key UNIQUE (area, bucket)
);
SELECT create_hypertable('traffic_area_rollup_1h', by_range('bucket', INTERVAL '90 days'));

CREATE TABLE traffic_area_rollup_1d (
    area    text NOT NULL CHECK (area IN ('gate', 'golden', 'growing', 'green', 'city')),
    bucket  timestamptz NOT NULL,
    readings  integer NOT NULL,
    vehicle_count_n  integer NOT NULL,
    vehicle_count_min  integer,
    vehicle_count_max  integer,
    vehicle_count_sum  bigint,
    interval_s_n  integer NOT NULL,
    interval_s_min  double precision,
    interval_s_max  double precision,
    interval_s_sum  double precision,
    avg_speed_kmh_n  integer NOT NULL,
    avg_speed_kmh_min  double precision,
    avg_speed_kmh_max  double precision,
    avg_speed_kmh_sum  double precision,
    occupancy_pct_n  integer NOT NULL,
    occupancy_pct_min  double precision,
    occupancy_pct_max  double precision,
    occupancy_pct_sum  double precision,
    heavy_vehicle_count_n  integer NOT NULL,
    heavy_vehicle_count_min  integer,
    heavy_vehicle_count_max  integer,
    heavy_vehicle_count_sum  bigint,
    CONSTRAINT traffic_area_rollup_1d_area_bucket_key UNIQUE (area, bucket)
);
SELECT create_hypertable('traffic_area_rollup_1d', by_range('bucket', INTERVAL '365 days'));

CREATE TABLE energy_area_rollup_1h (
    area    text NOT NULL CHECK (area IN ('gate', 'golden', 'growing', 'green', 'city')),
    bucket  timestamptz NOT NULL,
    readings  integer NOT NULL,
    energy_kwh_n  integer NOT NULL,
    energy_kwh_min  double precision,
    energy_kwh_max  double precision,
    energy_kwh_sum  double precision,
    energy_kwh_increase  double precision,
    power_kw_n  integer NOT NULL,
    power_kw_min  double precision,
    power_kw_max  double precision,
    power_kw_sum  double precision,
    voltage_v_n  integer NOT NULL,
    voltage_v_min  double precision,
    voltage_v_max  double precision,
    voltage_v_sum  double precision,
    current_a_n  integer NOT NULL,
    current_a_min  double precision,
    current_a_max  double precision,
    current_a_sum  double precision,
    power_factor_n  integer NOT NULL,
    power_factor_min  double precision,
    power_factor_max  double precision,
    power_factor_sum  double precision,
    CONSTRAINT energy_area_rollup_1h_area_bucket_key UNIQUE (area, bucket)
);
SELECT create_hypertable('energy_area_rollup_1h', by_range('bucket', INTERVAL '90 days'));

CREATE TABLE energy_area_rollup_1d (
    area    text NOT NULL CHECK (area IN ('gate', 'golden', 'growing', 'green', 'city')),
    bucket  timestamptz NOT NULL,
    readings  integer NOT NULL,
    energy_kwh_n  integer NOT NULL,
    energy_kwh_min  double precision,
    energy_kwh_max  double precision,
    energy_kwh_sum  double precision,
    energy_kwh_increase  double precision,
    power_kw_n  integer NOT NULL,
    power_kw_min  double precision,
    power_kw_max  double precision,
    power_kw_sum  double precision,
    voltage_v_n  integer NOT NULL,
    voltage_v_min  double precision,
    voltage_v_max  double precision,
    voltage_v_sum  double precision,
    current_a_n  integer NOT NULL,
    current_a_min  double precision,
    current_a_max  double precision,
    current_a_sum  double precision,
    power_factor_n  integer NOT NULL,
    power_factor_min  double precision,
    power_factor_max  double precision,
    power_factor_sum  double precision,
    CONSTRAINT energy_area_rollup_1d_area_bucket_key UNIQUE (area, bucket)
);
SELECT create_hypertable('energy_area_rollup_1d', by_range('bucket', INTERVAL '365 days'));

CREATE TABLE air_area_rollup_1h (
    area    text NOT NULL CHECK (area IN ('gate', 'golden', 'growing', 'green', 'city')),
    bucket  timestamptz NOT NULL,
    readings  integer NOT NULL,
    pm2_5_n  integer NOT NULL,
    pm2_5_min  double precision,
    pm2_5_max  double precision,
    pm2_5_sum  double precision,
    pm10_n  integer NOT NULL,
    pm10_min  double precision,
    pm10_max  double precision,
    pm10_sum  double precision,
    no2_n  integer NOT NULL,
    no2_min  double precision,
    no2_max  double precision,
    no2_sum  double precision,
    so2_n  integer NOT NULL,
    so2_min  double precision,
    so2_max  double precision,
    so2_sum  double precision,
    o3_n  integer NOT NULL,
    o3_min  double precision,
    o3_max  double precision,
    o3_sum  double precision,
    co_n  integer NOT NULL,
    co_min  double precision,
    co_max  double precision,
    co_sum  double precision,
    temperature_c_n  integer NOT NULL,
    temperature_c_min  double precision,
    temperature_c_max  double precision,
    temperature_c_sum  double precision,
    humidity_pct_n  integer NOT NULL,
    humidity_pct_min  double precision,
    humidity_pct_max  double precision,
    humidity_pct_sum  double precision,
    pressure_hpa_n  integer NOT NULL,
    pressure_hpa_min  double precision,
    pressure_hpa_max  double precision,
    pressure_hpa_sum  double precision,
    CONSTRAINT air_area_rollup_1h_area_bucket_key UNIQUE (area, bucket)
);
SELECT create_hypertable('air_area_rollup_1h', by_range('bucket', INTERVAL '90 days'));

CREATE TABLE air_area_rollup_1d (
    area    text NOT NULL CHECK (area IN ('gate', 'golden', 'growing', 'green', 'city')),
    bucket  timestamptz NOT NULL,
    readings  integer NOT NULL,
    pm2_5_n  integer NOT NULL,
    pm2_5_min  double precision,
    pm2_5_max  double precision,
    pm2_5_sum  double precision,
    pm10_n  integer NOT NULL,
    pm10_min  double precision,
    pm10_max  double precision,
    pm10_sum  double precision,
    no2_n  integer NOT NULL,
    no2_min  double precision,
    no2_max  double precision,
    no2_sum  double precision,
    so2_n  integer NOT NULL,
    so2_min  double precision,
    so2_max  double precision,
    so2_sum  double precision,
    o3_n  integer NOT NULL,
    o3_min  double precision,
    o3_max  double precision,
    o3_sum  double precision,
    co_n  integer NOT NULL,
    co_min  double precision,
    co_max  double precision,
    co_sum  double precision,
    temperature_c_n  integer NOT NULL,
    temperature_c_min  double precision,
    temperature_c_max  double precision,
    temperature_c_sum  double precision,
    humidity_pct_n  integer NOT NULL,
    humidity_pct_min  double precision,
    humidity_pct_max  double precision,
    humidity_pct_sum  double precision,
    pressure_hpa_n  integer NOT NULL,
    pressure_hpa_min  double precision,
    pressure_hpa_max  double precision,
    pressure_hpa_sum  double precision,
    CONSTRAINT air_area_rollup_1d_area_bucket_key UNIQUE (area, bucket)
);
SELECT create_hypertable('air_area_rollup_1d', by_range('bucket', INTERVAL '365 days'));

-- Devices whose area membership changed, and the areas whose tiers must be re-derived for them.
CREATE TABLE rollup_area_moves (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('traffic', 'energy', 'air')),
    device_id  text NOT NULL,
    area       text NOT NULL,
    moved_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollup_area_moves_kind_idx ON rollup_area_moves (kind, id);

CREATE FUNCTION rollup_note_area_move() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    has_history boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- A new device has no history unless its id was used before: only then re-derive.
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE device_id = $1)',
                       NEW.kind || '_rollup_1h')
            INTO has_history USING NEW.device_id;
        IF has_history THEN
            INSERT INTO rollup_area_moves (kind, device_id, area)
                VALUES (NEW.kind, NEW.device_id, NEW.district), (NEW.kind, NEW.device_id, 'city');
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.device_id = OLD.device_id AND NEW.kind = OLD.kind THEN
        IF NEW.district IS DISTINCT FROM OLD.district THEN
            INSERT INTO rollup_area_moves (kind, device_id, area)
                VALUES (OLD.kind, OLD.device_id, OLD.district), (NEW.kind, NEW.device_id, NEW.district);
        END IF;
        RETURN NULL;
    END IF;
    -- A removal, or a change of id or kind: the old areas lose the device, the new ones gain it.
    INSERT INTO rollup_area_moves (kind, device_id, area)
        VALUES (OLD.kind, OLD.device_id, OLD.district), (OLD.kind, OLD.device_id, 'city');
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_area_moves (kind, device_id, area)
            VALUES (NEW.kind, NEW.device_id, NEW.district), (NEW.kind, NEW.device_id, 'city');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_area_moves
    AFTER INSERT OR DELETE OR UPDATE OF device_id, kind, district ON devices
    FOR EACH ROW EXECUTE FUNCTION rollup_note_area_move();

-- Devices' tiers written before this migration are summed into the area tiers by the worker,
-- like a move of every device.
INSERT INTO rollup_area_moves (kind, device_id, area)
    SELECT kind, device_id, district FROM devices
    UNION ALL SELECT kind, device_id, 'city' FROM devices;
