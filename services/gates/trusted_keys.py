"""The public keys gates trusts for signature and provenance gates: one PEM file `<key id>.pub` each in the
trusted keys directory (setting `trusted_keys_dir`), read again whenever a file there changes.

A file that is not a key we take (shared.signature_keys) is not skipped in silence: its key id maps to the
reason, and a gate naming it fails with that reason. So does a key file, or a directory, that someone other
than its owner may write (group- or world-writable): whoever could write it could choose whom gates trusts. Keys live with gates, not in pipelines: who may apply a
pipeline chooses which of these keys an environment requires, not which keys exist.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import structlog

from shared.signature_keys import MAX_PEM_CHARS, TrustedKey
from shared.contracts.trust_gates import KEY_ID_PATTERN

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
            open_to_others = self._open_to_others(self.directory)
            self._keys = {name[:-len(".pub")]: open_to_others or self._load(self.directory / name)
                          for name, *_ in listing if name}
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
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed while listed
                continue
            stats.append((entry.name, info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino, info.st_mode))
        try:  # the directory's mode too: it decides whether any of its keys is trusted
            stats.append(("", os.stat(self.directory).st_mode))
        except OSError:
            pass
        return tuple(stats)

    @staticmethod
    def _open_to_others(path: Path) -> str | None:
        """Why keys under `path` cannot be trusted: it may be written by others than its owner; else None."""
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return None
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{path} may be written by others than its owner (mode {stat.S_IMODE(mode):o}): not trusted"
        return None

    @classmethod
    def _load(cls, path: Path) -> TrustedKey | str:
        key_id = path.name[:-len(".pub")]
        try:
            with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as file:
                if problem := cls._open_to_others(Path(f"/proc/self/fd/{file.fileno()}")):
                    return problem.replace(f"/proc/self/fd/{file.fileno()}", str(path))
                data = file.read(MAX_PEM_CHARS + 1)
            return TrustedKey.from_pem(key_id, data)
        except OSError as error:
            return f"key {key_id}: {path} cannot be read ({error.strerror})"
        except ValueError as error:
            return f"{error} ({path})"
