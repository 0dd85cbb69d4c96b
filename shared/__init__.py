"""Code shared by every promotion service: contracts, wiring and settings."""
