"""MQTT ingest: validate every reading, store it once in TimescaleDB, keep every rejection."""
