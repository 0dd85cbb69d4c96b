"""Structured JSON logs through structlog, with per-message context bound via contextvars."""

import logging
import sys

import structlog


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stdout, with `service` bound on every line."""
    logging.basicConfig(stream=sys.stdout, level=getattr(logging, level), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health probe is noise
