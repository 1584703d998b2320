"""Rollup tiers (1 minute, 1 hour, 1 Almaty day) kept exact by recomputing dirty buckets."""
