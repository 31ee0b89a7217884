"""Benchmarks: each prints JSON. Ratios are measured within one run (shared machines)."""
