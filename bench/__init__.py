"""Benchmark suite (SPEC §21): engine figures as ratios to baselines measured on the same server, same run.

Run with ``python -m bench`` (``make bench``); never part of the test suite.
"""
