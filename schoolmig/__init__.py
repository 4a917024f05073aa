"""schoolmig's client SDK and command line: publish snapshots, run the stack, report."""

from schoolmig.sdk import build_envelopes, publish_snapshot

__all__ = ["build_envelopes", "publish_snapshot"]
