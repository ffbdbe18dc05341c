"""Comparing the two architectures: records, metrics, sweeps, summaries and benchmarks."""
