"""Speed and time-to-accuracy benchmarks: `make bench` (python -m benchmarks)."""
