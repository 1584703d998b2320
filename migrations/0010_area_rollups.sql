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

-- The area rows of device tiers written before this migration, derived set-based from them
-- (the text of rollups/area_sql.py backfill_areas over the whole time axis). Buckets still
-- holding dirty minutes are read per device until the worker re-derives them.

INSERT INTO traffic_area_rollup_1h (area, bucket, readings, vehicle_count_n, vehicle_count_min, vehicle_count_max, vehicle_count_sum, interval_s_n, interval_s_min, interval_s_max, interval_s_sum, avg_speed_kmh_n, avg_speed_kmh_min, avg_speed_kmh_max, avg_speed_kmh_sum, occupancy_pct_n, occupancy_pct_min, occupancy_pct_max, occupancy_pct_sum, heavy_vehicle_count_n, heavy_vehicle_count_min, heavy_vehicle_count_max, heavy_vehicle_count_sum) SELECT m.area, w.bucket, sum(w.readings)::integer AS readings, sum(w.vehicle_count_n)::integer AS vehicle_count_n, min(w.vehicle_count_min) AS vehicle_count_min, max(w.vehicle_count_max) AS vehicle_count_max, sum(w.vehicle_count_sum)::bigint AS vehicle_count_sum, sum(w.interval_s_n)::integer AS interval_s_n, min(w.interval_s_min) AS interval_s_min, max(w.interval_s_max) AS interval_s_max, sum(w.interval_s_sum) AS interval_s_sum, sum(w.avg_speed_kmh_n)::integer AS avg_speed_kmh_n, min(w.avg_speed_kmh_min) AS avg_speed_kmh_min, max(w.avg_speed_kmh_max) AS avg_speed_kmh_max, sum(w.avg_speed_kmh_sum) AS avg_speed_kmh_sum, sum(w.occupancy_pct_n)::integer AS occupancy_pct_n, min(w.occupancy_pct_min) AS occupancy_pct_min, max(w.occupancy_pct_max) AS occupancy_pct_max, sum(w.occupancy_pct_sum) AS occupancy_pct_sum, sum(w.heavy_vehicle_count_n)::integer AS heavy_vehicle_count_n, min(w.heavy_vehicle_count_min) AS heavy_vehicle_count_min, max(w.heavy_vehicle_count_max) AS heavy_vehicle_count_max, sum(w.heavy_vehicle_count_sum)::bigint AS heavy_vehicle_count_sum FROM (SELECT t.* FROM traffic_rollup_1h AS t WHERE t.bucket >= '-infinity'::timestamptz AND t.bucket < 'infinity'::timestamptz) AS w JOIN (SELECT device_id, district AS area FROM devices WHERE kind = 'traffic' UNION ALL SELECT device_id, 'city' AS area FROM devices WHERE kind = 'traffic') AS m ON m.device_id = w.device_id GROUP BY m.area, w.bucket;

INSERT INTO traffic_area_rollup_1d (area, bucket, readings, vehicle_count_n, vehicle_count_min, vehicle_count_max, vehicle_count_sum, interval_s_n, interval_s_min, interval_s_max, interval_s_sum, avg_speed_kmh_n, avg_speed_kmh_min, avg_speed_kmh_max, avg_speed_kmh_sum, occupancy_pct_n, occupancy_pct_min, occupancy_pct_max, occupancy_pct_sum, heavy_vehicle_count_n, heavy_vehicle_count_min, heavy_vehicle_count_max, heavy_vehicle_count_sum) SELECT m.area, w.bucket, sum(w.readings)::integer AS readings, sum(w.vehicle_count_n)::integer AS vehicle_count_n, min(w.vehicle_count_min) AS vehicle_count_min, max(w.vehicle_count_max) AS vehicle_count_max, sum(w.vehicle_count_sum)::bigint AS vehicle_count_sum, sum(w.interval_s_n)::integer AS interval_s_n, min(w.interval_s_min) AS interval_s_min, max(w.interval_s_max) AS interval_s_max, sum(w.interval_s_sum) AS interval_s_sum, sum(w.avg_speed_kmh_n)::integer AS avg_speed_kmh_n, min(w.avg_speed_kmh_min) AS avg_speed_kmh_min, max(w.avg_speed_kmh_max) AS avg_speed_kmh_max, sum(w.avg_speed_kmh_sum) AS avg_speed_kmh_sum, sum(w.occupancy_pct_n)::integer AS occupancy_pct_n, min(w.occupancy_pct_min) AS occupancy_pct_min, max(w.occupancy_pct_max) AS occupancy_pct_max, sum(w.occupancy_pct_sum) AS occupancy_pct_sum, sum(w.heavy_vehicle_count_n)::integer AS heavy_vehicle_count_n, min(w.heavy_vehicle_count_min) AS heavy_vehicle_count_min, max(w.heavy_vehicle_count_max) AS heavy_vehicle_count_max, sum(w.heavy_vehicle_count_sum)::bigint AS heavy_vehicle_count_sum FROM (SELECT t.* FROM traffic_rollup_1d AS t WHERE t.bucket >= '-infinity'::timestamptz AND t.bucket < 'infinity'::timestamptz) AS w JOIN (SELECT device_id, district AS area FROM devices WHERE kind = 'traffic' UNION ALL SELECT device_id, 'city' AS area FROM devices WHERE kind = 'traffic') AS m ON m.device_id = w.device_id GROUP BY m.area, w.bucket;

INSERT INTO energy_area_rollup_1h (area, bucket, readings, energy_kwh_n, energy_kwh_min, energy_kwh_max, energy_kwh_sum, energy_kwh_increase, power_kw_n, power_kw_min, power_kw_max, power_kw_sum, voltage_v_n, voltage_v_min, voltage_v_max, voltage_v_sum, current_a_n, current_a_min, current_a_max, current_a_sum, power_factor_n, power_factor_min, power_factor_max, power_factor_sum) SELECT m.area, w.bucket, sum(w.readings)::integer AS readings, sum(w.energy_kwh_n)::integer AS energy_kwh_n, min(w.energy_kwh_min) AS energy_kwh_min, max(w.energy_kwh_max) AS energy_kwh_max, sum(w.energy_kwh_sum) AS energy_kwh_sum, CASE WHEN count(w.energy_kwh_first) > 0 THEN sum(w.energy_kwh_inc) + COALESCE(sum(CASE WHEN w.energy_kwh__prev IS NULL THEN NULL WHEN w.energy_kwh_first >= w.energy_kwh__prev THEN w.energy_kwh_first - w.energy_kwh__prev ELSE w.energy_kwh_first END), 0) END AS energy_kwh_increase, sum(w.power_kw_n)::integer AS power_kw_n, min(w.power_kw_min) AS power_kw_min, max(w.power_kw_max) AS power_kw_max, sum(w.power_kw_sum) AS power_kw_sum, sum(w.voltage_v_n)::integer AS voltage_v_n, min(w.voltage_v_min) AS voltage_v_min, max(w.voltage_v_max) AS voltage_v_max, sum(w.voltage_v_sum) AS voltage_v_sum, sum(w.current_a_n)::integer AS current_a_n, min(w.current_a_min) AS current_a_min, max(w.current_a_max) AS current_a_max, sum(w.current_a_sum) AS current_a_sum, sum(w.power_factor_n)::integer AS power_factor_n, min(w.power_factor_min) AS power_factor_min, max(w.power_factor_max) AS power_factor_max, sum(w.power_factor_sum) AS power_factor_sum FROM (SELECT t.*, CASE WHEN t.energy_kwh_first IS NOT NULL THEN COALESCE(lag(t.energy_kwh_last) OVER (PARTITION BY t.device_id, (t.energy_kwh_first IS NULL) ORDER BY t.bucket), (SELECT p.energy_kwh_last FROM energy_rollup_1h AS p WHERE p.device_id = t.device_id AND p.bucket < '-infinity'::timestamptz AND p.energy_kwh_last IS NOT NULL ORDER BY p.bucket DESC LIMIT 1)) END AS energy_kwh__prev FROM energy_rollup_1h AS t WHERE t.bucket >= '-infinity'::timestamptz AND t.bucket < 'infinity'::timestamptz) AS w JOIN (SELECT device_id, district AS area FROM devices WHERE kind = 'energy' UNION ALL SELECT device_id, 'city' AS area FROM devices WHERE kind = 'energy') AS m ON m.device_id = w.device_id GROUP BY m.area, w.bucket;

INSERT INTO energy_area_rollup_1d (area, bucket, readings, energy_kwh_n, energy_kwh_min, energy_kwh_max, energy_kwh_sum, energy_kwh_increase, power_kw_n, power_kw_min, power_kw_max, power_kw_sum, voltage_v_n, voltage_v_min, voltage_v_max, voltage_v_sum, current_a_n, current_a_min, current_a_max, current_a_sum, power_factor_n, power_factor_min, power_factor_max, power_factor_sum) SELECT m.area, w.bucket, sum(w.readings)::integer AS readings, sum(w.energy_kwh_n)::integer AS energy_kwh_n, min(w.energy_kwh_min) AS energy_kwh_min, max(w.energy_kwh_max) AS energy_kwh_max, sum(w.energy_kwh_sum) AS energy_kwh_sum, CASE WHEN count(w.energy_kwh_first) > 0 THEN sum(w.energy_kwh_inc) + COALESCE(sum(CASE WHEN w.energy_kwh__prev IS NULL THEN NULL WHEN w.energy_kwh_first >= w.energy_kwh__prev THEN w.energy_kwh_first - w.energy_kwh__prev ELSE w.energy_kwh_first END), 0) END AS energy_kwh_increase, sum(w.power_kw_n)::integer AS power_kw_n, min(w.power_kw_min) AS power_kw_min, max(w.power_kw_max) AS power_kw_max, sum(w.power_kw_sum) AS power_kw_sum, sum(w.voltage_v_n)::integer AS voltage_v_n, min(w.voltage_v_min) AS voltage_v_min, max(w.voltage_v_max) AS voltage_v_max, sum(w.voltage_v_sum) AS voltage_v_sum, sum(w.current_a_n)::integer AS current_a_n, min(w.current_a_min) AS current_a_min, max(w.current_a_max) AS current_a_max, sum(w.current_a_sum) AS current_a_sum, sum(w.power_factor_n)::integer AS power_factor_n, min(w.power_factor_min) AS power_factor_min, max(w.power_factor_max) AS power_factor_max, sum(w.power_factor_sum) AS power_factor_sum FROM (SELECT t.*, CASE WHEN t.energy_kwh_first IS NOT NULL THEN COALESCE(lag(t.energy_kwh_last) OVER (PARTITION BY t.device_id, (t.energy_kwh_first IS NULL) ORDER BY t.bucket), (SELECT p.energy_kwh_last FROM energy_rollup_1d AS p WHERE p.device_id = t.device_id AND p.bucket < '-infinity'::timestamptz AND p.energy_kwh_last IS NOT NULL ORDER BY p.bucket DESC LIMIT 1)) END AS energy_kwh__prev FROM energy_rollup_1d AS t WHERE t.bucket >= '-infinity'::timestamptz AND t.bucket < 'infinity'::timestamptz) AS w JOIN (SELECT device_id, district AS area FROM devices WHERE kind = 'energy' UNION ALL SELECT device_id, 'city' AS area FROM devices WHERE kind = 'energy') AS m ON m.device_id = w.device_id GROUP BY m.area, w.bucket;

INSERT INTO air_area_rollup_1h (area, bucket, readings, pm2_5_n, pm2_5_min, pm2_5_max, pm2_5_sum, pm10_n, pm10_min, pm10_max, pm10_sum, no2_n, no2_min, no2_max, no2_sum, so2_n, so2_min, so2_max, so2_sum, o3_n, o3_min, o3_max, o3_sum, co_n, co_min, co_max, co_sum, temperature_c_n, temperature_c_min, temperature_c_max, temperature_c_sum, humidity_pct_n, humidity_pct_min, humidity_pct_max, humidity_pct_sum, pressure_hpa_n, pressure_hpa_min, pressure_hpa_max, pressure_hpa_sum) SELECT m.area, w.bucket, sum(w.readings)::integer AS readings, sum(w.pm2_5_n)::integer AS pm2_5_n, min(w.pm2_5_min) AS pm2_5_min, max(w.pm2_5_max) AS pm2_5_max, sum(w.pm2_5_sum) AS pm2_5_sum, sum(w.pm10_n)::integer AS pm10_n, min(w.pm10_min) AS pm10_min, max(w.pm10_max) AS pm10_max, sum(w.pm10_sum) AS pm10_sum, sum(w.no2_n)::integer AS no2_n, min(w.no2_min) AS no2_min, max(w.no2_max) AS no2_max, sum(w.no2_sum) AS no2_sum, sum(w.so2_n)::integer AS so2_n, min(w.so2_min) AS so2_min, max(w.so2_max) AS so2_max, sum(w.so2_sum) AS so2_sum, sum(w.o3_n)::integer AS o3_n, min(w.o3_min) AS o3_min, max(w.o3_max) AS o3_max, sum(w.o3_sum) AS o3_sum, sum(w.co_n)::integer AS co_n, min(w.co_min) AS co_min, max(w.co_max) AS co_max, sum(w.co_sum) AS co_sum, sum(w.temperature_c_n)::integer AS temperature_c_n, min(w.temperature_c_min) AS temperature_c_min, max(w.temperature_c_max) AS temperature_c_max, sum(w.temperature_c_sum) AS temperature_c_sum, sum(w.humidity_pct_n)::integer AS humidity_pct_n, min(w.humidity_pct_min) AS humidity_pct_min, max(w.humidity_pct_max) AS humidity_pct_max, sum(w.humidity_pct_sum) AS humidity_pct_sum, sum(w.pressure_hpa_n)::integer AS pressure_hpa_n, min(w.pressure_hpa_min) AS pressure_hpa_min, max(w.pressure_hpa_max) AS pressure_hpa_max, sum(w.pressure_hpa_sum) AS pressure_hpa_sum FROM (SELECT t.* FROM air_rollup_1h AS t WHERE t.bucket >= '-infinity'::timestamptz AND t.bucket < 'infinity'::timestamptz) AS w JOIN (SELECT device_id, district AS area FROM devices WHERE kind = 'air' UNION ALL SELECT device_id, 'city' AS area FROM devices WHERE kind = 'air') AS m ON m.device_id = w.device_id GROUP BY m.area, w.bucket;

INSERT INTO air_area_rollup_1d (area, bucket, readings, pm2_5_n, pm2_5_min, pm2_5_max, pm2_5_sum, pm10_n, pm10_min, pm10_max, pm10_sum, no2_n, no2_min, no2_max, no2_sum, so2_n, so2_min, so2_max, so2_sum, o3_n, o3_min, o3_max, o3_sum, co_n, co_min, co_max, co_sum, temperature_c_n, temperature_c_min, temperature_c_max, temperature_c_sum, humidity_pct_n, humidity_pct_min, humidity_pct_max, humidity_pct_sum, pressure_hpa_n, pressure_hpa_min, pressure_hpa_max, pressure_hpa_sum) SELECT m.area, w.bucket, sum(w.readings)::integer AS readings, sum(w.pm2_5_n)::integer AS pm2_5_n, min(w.pm2_5_min) AS pm2_5_min, max(w.pm2_5_max) AS pm2_5_max, sum(w.pm2_5_sum) AS pm2_5_sum, sum(w.pm10_n)::integer AS pm10_n, min(w.pm10_min) AS pm10_min, max(w.pm10_max) AS pm10_max, sum(w.pm10_sum) AS pm10_sum, sum(w.no2_n)::integer AS no2_n, min(w.no2_min) AS no2_min, max(w.no2_max) AS no2_max, sum(w.no2_sum) AS no2_sum, sum(w.so2_n)::integer AS so2_n, min(w.so2_min) AS so2_min, max(w.so2_max) AS so2_max, sum(w.so2_sum) AS so2_sum, sum(w.o3_n)::integer AS o3_n, min(w.o3_min) AS o3_min, max(w.o3_max) AS o3_max, sum(w.o3_sum) AS o3_sum, sum(w.co_n)::integer AS co_n, min(w.co_min) AS co_min, max(w.co_max) AS co_max, sum(w.co_sum) AS co_sum, sum(w.temperature_c_n)::integer AS temperature_c_n, min(w.temperature_c_min) AS temperature_c_min, max(w.temperature_c_max) AS temperature_c_max, sum(w.temperature_c_sum) AS temperature_c_sum, sum(w.humidity_pct_n)::integer AS humidity_pct_n, min(w.humidity_pct_min) AS humidity_pct_min, max(w.humidity_pct_max) AS humidity_pct_max, sum(w.humidity_pct_sum) AS humidity_pct_sum, sum(w.pressure_hpa_n)::integer AS pressure_hpa_n, min(w.pressure_hpa_min) AS pressure_hpa_min, max(w.pressure_hpa_max) AS pressure_hpa_max, sum(w.pressure_hpa_sum) AS pressure_hpa_sum FROM (SELECT t.* FROM air_rollup_1d AS t WHERE t.bucket >= '-infinity'::timestamptz AND t.bucket < 'infinity'::timestamptz) AS w JOIN (SELECT device_id, district AS area FROM devices WHERE kind = 'air' UNION ALL SELECT device_id, 'city' AS area FROM devices WHERE kind = 'air') AS m ON m.device_id = w.device_id GROUP BY m.area, w.bucket;
