"""Scenarios, one module per family; each returns table rows (``bench.report.Result``)."""
