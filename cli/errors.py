"""Errors the CLI reports as one readable line (never a traceback)."""


class CliError(Exception):
    """A failure the operator can act on; the message is the whole story."""
