"""The notifications file (setting `notifications_file`) and the receivers' HMAC secrets (setting
`webhook_secrets_dir`, one file per secret name), read again whenever the file changes.

A file that does not parse, or a subscription whose URL is under none of `allowed_urls`, is not skipped in
silence: the problem is kept (`problem`), shown on /health, and the last good subscriptions stay in force.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from services.notifier.domain import Notifications, Subscription, url_allowed
from shared.contracts import limits

log = structlog.get_logger()
MAX_FILE_BYTES = 256 * 1024
MAX_SECRET_BYTES = 4096


class NotificationsFile:
    """The subscriptions in force, from `path` (none while there is no file)."""

    def __init__(self, path: Path, secrets_dir: Path) -> None:
        self.path, self.secrets_dir = path, secrets_dir
        self._seen: tuple[int, int] | None = None
        self.current = Notifications()
        self.problem: str | None = None

    def load(self) -> Notifications:
        """The subscriptions now (the file re-read if its size or mtime changed)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._seen, self.current, self.problem = None, Notifications(), None
            return self.current
        seen = (info.st_mtime_ns, info.st_size)
        if seen != self._seen:
            self._seen = seen
            self._read(info.st_size)
        return self.current

    def _read(self, size: int) -> None:
        if size > MAX_FILE_BYTES:
            self.problem = f"{self.path}: {size} bytes, more than the {MAX_FILE_BYTES} a notifications file may have"
            return
        try:
            text = self.path.read_text()
            limits.check_yaml(text)  # depth, nodes with aliases expanded: the pipeline files' limits
            loaded = Notifications.model_validate(YAML(typ="safe", pure=True).load(text) or {})
        except limits.YamlLimitExceeded as error:
            self.problem = f"{self.path}: {error}"
        except (OSError, UnicodeDecodeError, YAMLError) as error:
            self.problem = f"{self.path}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            self.problem = f"{self.path}: {where}: {first['msg']}"
        else:
            refused = loaded.refused()
            self.problem = "; ".join(refused) if refused else None
            allowed = [s for s in loaded.subscriptions if url_allowed(s.url, loaded.allowed_urls)]
            self.current = loaded.model_copy(update={"subscriptions": tuple(allowed)})
            log.info("notifications.loaded", subscriptions=[s.name for s in allowed], refused=refused)
            return
        log.error("notifications.refused", problem=self.problem)

    def secret(self, subscription: Subscription) -> bytes | None:
        """The subscription's HMAC key, or None when its file is missing, empty, too long, or writable by others
        than its owner (whoever could write it could sign as the notifier)."""
        path = self.secrets_dir / subscription.secret
        try:
            info = os.stat(path, follow_symlinks=False)
            if not path.is_file() or path.is_symlink() or info.st_mode & 0o022 or info.st_size > MAX_SECRET_BYTES:
                return None
            value = path.read_bytes().strip()
        except OSError:
            return None
        return value or None
