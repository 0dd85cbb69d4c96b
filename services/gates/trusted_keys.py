"""The public keys gates trusts for signature and provenance gates: one PEM file `<key id>.pub` each in the
trusted keys directory (setting `trusted_keys_dir`), read again whenever a file there changes.

A file that is not a key we take (shared.signature_keys) is not skipped in silence: its key id maps to the
reason, and a gate naming it fails with that reason. Keys live with gates, not in pipelines: who may apply a
pipeline chooses which of these keys an environment requires, not which keys exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import structlog

from shared.signature_keys import MAX_PEM_CHARS, TrustedKey
from shared.trust_gates import KEY_ID_PATTERN

log = structlog.get_logger()
_KEY_FILE = re.compile(KEY_ID_PATTERN.rstrip("$") + r"\.pub$")
MAX_KEYS = 256

Keys = dict[str, TrustedKey | str]
"""By key id: the key, or why its file is not one."""


class TrustedKeys:
    """The keys in `directory`, loaded again when its files change (a stat per file and call)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: tuple | None = None
        self._keys: Keys = {}

    def current(self) -> Keys:
        """Every key id in the directory with its key (or its problem); {} if there is no directory."""
        listing = self._listing()
        if listing != self._seen:
            self._keys = {name[:-len(".pub")]: self._load(self.directory / name) for name, *_ in listing}
            self._seen = listing
            log.info("trusted_keys.loaded", directory=str(self.directory),
                     keys=sorted(key for key, value in self._keys.items() if isinstance(value, TrustedKey)),
                     refused=sorted(key for key, value in self._keys.items() if isinstance(value, str)))
        return self._keys

    def _listing(self) -> tuple:
        try:
            entries = [entry for entry in os.scandir(self.directory) if _KEY_FILE.match(entry.name)]
        except FileNotFoundError:
            return ()
        stats = []
        for entry in sorted(entries, key=lambda entry: entry.name)[:MAX_KEYS]:
            try:
                stat = entry.stat()
            except FileNotFoundError:  # removed while listed
                continue
            stats.append((entry.name, stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(stats)

    @staticmethod
    def _load(path: Path) -> TrustedKey | str:
        key_id = path.name[:-len(".pub")]
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_PEM_CHARS + 1)
            return TrustedKey.from_pem(key_id, data)
        except OSError as error:
            return f"key {key_id}: {path} cannot be read ({error.strerror})"
        except ValueError as error:
            return f"{error} ({path})"
