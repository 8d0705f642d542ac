"""Kafka worker, compactor, metrics and the accumulator CLI."""
