"""Validator: proves what PostgreSQL holds matches the source, per school and domain."""
