"""Rollback: returns an environment to the last release verified there."""
