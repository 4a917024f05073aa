"""Transform: maps each raw source record to target rows, or to quarantine with a reason."""
