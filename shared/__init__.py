"""schoolmig's common package: what two or more services (or a service and the CLI) share,
grouped by concern, each floor importing only the floors below it:

- ``catalog``: the domains, the target tables, time-zone rules, deterministic ids (pure).
- ``source``: reading what a browser holds (snapshot files, JSON safety limits; pure).
- ``mapping``: source records to target rows and back (pure; rows, never the wire).
- ``wire``: the messages on the topics, their batches, chunks, barriers and fan-out.
- ``platform``: settings, logs, telemetry, PostgreSQL, Kafka, signing, topics, leases,
  the embedded servers, and what every service does at start-up.
- ``failures``: the whole failure policy: classification, back-off, the guard, dead letters.
- ``ledger``: what each record's state is in PostgreSQL, and the accounting over it.
"""
