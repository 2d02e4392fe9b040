"""Throughput, latency and memory benchmarks of the lusv data path and models (see docs/performance.md)."""
