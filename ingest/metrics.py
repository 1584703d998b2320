"""Prometheus metrics of ingest."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED: Final = Counter(
    "alatau_ingest_messages_received_total", "MQTT messages received", ["kind"]
)
READINGS_STORED: Final = Counter(
    "alatau_ingest_readings_stored_total", "readings inserted into the database", ["kind"]
)
READINGS_DUPLICATE: Final = Counter(
    "alatau_ingest_readings_duplicate_total",
    "readings equal to one already stored (same device, ts and values: a redelivery), stored"
    " once and not refused; one with other values is refused as conflicting_duplicate",
    ["kind"],
)
READINGS_REJECTED: Final = Counter(
    "alatau_ingest_readings_rejected_total", "readings refused, by reason", ["reason"]
)
BATCH_SIZE: Final = Histogram(
    "alatau_ingest_batch_readings",
    "readings per database write",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000),
)
COMMIT_SECONDS: Final = Histogram(
    "alatau_ingest_commit_seconds",
    "time to write and commit one batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUED_READINGS: Final = Gauge(
    "alatau_ingest_queued_readings", "readings taken into the latest batch (queue depth)"
)
UNACKED: Final = Gauge(
    "alatau_ingest_unacked_messages",
    "messages of the latest batch, unacknowledged until it commits",
)
DB_RETRIES: Final = Counter(
    "alatau_ingest_db_retries_total", "batch writes retried after an outage"
)
ACKS_SENT: Final = Counter(
    "alatau_ingest_acks_sent_total", "PUBACKs written after their batch committed"
)
OUTSTANDING: Final = Gauge(
    "alatau_ingest_outstanding_deliveries",
    "edge deliveries this replica holds unacknowledged (stored or not yet)",
)
ACKS_DROPPED: Final = Counter(
    "alatau_ingest_acks_dropped_total",
    "PUBACKs not written because the connection their message came on is gone "
    "(the broker redelivers those messages)",
)
ECHOES_SENT: Final = Counter(
    "alatau_ingest_echoes_sent_total",
    "rejections echoed to their device on alatau/{kind}/{id}/errors",
)
ECHOES_DROPPED: Final = Counter(
    "alatau_ingest_echoes_dropped_total",
    "rejection echoes not sent: beyond the device's rate bound",
)
ECHOES_FAILED: Final = Counter(
    "alatau_ingest_echoes_failed_total",
    "rejection echoes lost because the broker connection failed (the rejections are stored)",
)
