"""Benchmarks that print figures; run by hand, never as timed assertions in tests (see README.md)."""
