"""The runner's own cost, measured: ``make bench`` (``python -m bench.run``).

Every figure is a difference or a ratio of two things measured side by side in the same
invocation, repeated, with the median quoted; the machine and its load are recorded with it.
The modules here measure; :mod:`bench.results` holds the schema and the report.
"""
