"""Loader: writes mapped rows to PostgreSQL in idempotent batches; stores quarantine."""
