"""Ledger: the append-only, hash-chained history of every event, and the projections operators read."""
