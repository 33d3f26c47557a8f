"""Benchmarks: the memory throughput benchmark and the broker comparison (``msgbus bench``)."""
