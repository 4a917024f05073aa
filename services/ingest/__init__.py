"""Ingest: the public door. Reassembles snapshots, backs them up, fans records out per domain."""
