"""Runtime plumbing every layer shares: Kafka clients, dead-letter writing, atomic files, DuckDB, decoding.

The shapes the layers agree on live one level up (``lambda_contracts``); this subpackage holds the
code that moves those shapes in and out of Kafka and files, so that no layer writes it again.
"""
