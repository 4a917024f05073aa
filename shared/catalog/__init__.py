"""The domains, the target tables, time-zone rules and deterministic ids. Pure."""
