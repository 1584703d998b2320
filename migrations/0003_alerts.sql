-- Alert rules (a metric beyond a threshold for a sustained window, or a device offline) and the
-- alerts they open: open -> acknowledged -> resolved, with who acknowledged and when.
CREATE TABLE alert_rules (
    rule_id      bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    condition    text NOT NULL CHECK (condition IN ('above', 'below', 'offline')),
    kind         text CHECK (kind IN ('traffic', 'energy', 'air')),
    metric       text,
    threshold    double precision,
    window_s     double precision NOT NULL CHECK (window_s > 0),
    district     text CHECK (district IN ('gate', 'golden', 'growing', 'green')),
    device_id    text,
    severity     text NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((condition = 'offline') = (metric IS NULL)),
    CHECK (condition = 'offline' OR (kind IS NOT NULL AND threshold IS NOT NULL))
);

CREATE TABLE alerts (
    alert_id         bigserial PRIMARY KEY,
    rule_id          bigint NOT NULL REFERENCES alert_rules (rule_id) ON DELETE CASCADE,
    device_id        text NOT NULL,
    state            text NOT NULL DEFAULT 'open'
                     CHECK (state IN ('open', 'acknowledged', 'resolved')),
    value            double precision,
    message          text NOT NULL,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- At most one unresolved alert per rule and device, whichever replica evaluates.
CREATE UNIQUE INDEX alerts_active_key ON alerts (rule_id, device_id) WHERE state <> 'resolved';
CREATE INDEX alerts_state_idx ON alerts (state, opened_at DESC);
CREATE INDEX alerts_device_idx ON alerts (device_id, opened_at DESC);

-- Defaults for the city (WHO and traffic-operations thresholds); operators change them over the API.
INSERT INTO alert_rules (name, condition, kind, metric, threshold, window_s, severity) VALUES
    ('PM2.5 above 75 µg/m³ for 15 minutes', 'above', 'air', 'pm2_5', 75, 900, 'critical'),
    ('Speed under 15 km/h for 10 minutes', 'below', 'traffic', 'avg_speed_kmh', 15, 600, 'warning');
INSERT INTO alert_rules (name, condition, window_s, severity) VALUES
    ('Device offline for 5 minutes', 'offline', 300, 'warning');
