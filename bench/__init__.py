"""Benchmarks of the pipeline against its physical limits (``make bench``)."""
