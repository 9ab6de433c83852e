"""Benchmark scripts (make bench, make bench-booking, make bench-scheduler)."""
