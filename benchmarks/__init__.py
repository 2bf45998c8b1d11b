"""Benchmarks of mvee-lab (measurements, not tests): see bench_overhead."""
