"""Step-time and memory benchmarks (not part of the test run)."""
