"""Intake: registers built artifacts by digest and enforces their immutability."""
