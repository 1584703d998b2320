-- Device logins kept by the registry: a SHA-256 of each device's random secret (shown once, at
-- commissioning or rotation). The city edge (RabbitMQ) asks the api, which checks them here;
-- on the Mosquitto edge the broker keeps its own copy too. Commissioning is one row.
CREATE TABLE device_credentials (
    device_id    text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    issued_at    timestamptz NOT NULL DEFAULT now()
);
