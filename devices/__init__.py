"""Device registry and the reading contract shared by ingest, api and simulators."""
