"""The failure policy, in one place: whose fault a failure is, the back-off, the guard
around every handler, and the dead letters (each tagged with its stage)."""
