"""Coordinator: drives each school through the migration phases and writes the report."""
