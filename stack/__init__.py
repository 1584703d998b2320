"""Local development stack: private TimescaleDB and Mosquitto instances, and ``make run``."""
