"""schoolmig's common package: what two or more services share.

Message models, settings, topic names, domain catalogue, deterministic ids, the
target-table catalogue, PostgreSQL pool and migrations, telemetry set-up, and the
embedded servers used when no external Kafka / PostgreSQL is configured.
"""
