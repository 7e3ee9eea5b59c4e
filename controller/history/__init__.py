"""Metric history of every point: raw, 1m, 5m and 1h tiers of compressed columnar segments in SQLite."""
