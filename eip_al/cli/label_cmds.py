"""`eip-al label | ingest`: labeling frames outside the loop."""
