"""Benchmarks (placeholder until the suite lands)."""
