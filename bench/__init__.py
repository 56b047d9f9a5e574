"""Benchmarks (not tests): each ``bench_*.py`` prints its figures; results go in docs/performance.md."""
