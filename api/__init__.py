"""REST API: device registry, latest and raw readings, aggregates, ingest rejections."""
