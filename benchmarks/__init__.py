"""Throughput, latency and memory benchmarks of the lusv data path and models (see README.md)."""
