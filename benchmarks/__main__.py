"""``python -m benchmarks`` (``make bench``): run every benchmark and print its table.

Benchmarks are not tests: they time things and report ratios measured in one process.
"""

from benchmarks import bench_step

if __name__ == "__main__":
    raise SystemExit(bench_step.main())
