"""Reading what a browser holds: snapshot files and the limits on untrusted JSON. Pure."""
