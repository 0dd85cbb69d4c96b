"""Structured JSON logs through structlog, with per-message context bound via contextvars.

Our own log calls and the libraries' standard-library loggers (FastStream, aiokafka,
asyncpg) all come out as one JSON object per line on stdout.
"""

import logging
import sys

import structlog

SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stdout, with `service` bound on every line."""
    structlog.configure(
        processors=[*SHARED, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*SHARED, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health probe is noise
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("faststream")] + ["faststream"]:
        library_logger(name)  # FastStream installs coloured text handlers of its own
    structlog.contextvars.bind_contextvars(service=service)


def library_logger(name: str, level: int = logging.NOTSET) -> logging.Logger:
    """A standard-library logger without handlers of its own, so that it renders through the root (JSON)."""
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(level)
    return logger
