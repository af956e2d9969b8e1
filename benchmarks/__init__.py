"""Benchmarks of the trainers' cost (not part of the test suite): ``python -m benchmarks.run --help``."""
