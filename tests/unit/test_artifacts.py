"""Unit tests for shared.artifacts and shared.artifact_source, on real directories: what a hostile
`build.completed` can make intake read, and what reaches the store."""

import hashlib
import itertools
import os
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.artifacts import ArtifactStore, ArtifactUnreachable, DigestMismatch, file_digest

BYTES = b"#!/bin/sh\necho hello\n"
DIGEST = "sha256:" + hashlib.sha256(BYTES).hexdigest()
HEX = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    """The drop directory: the one artifact root of these tests."""
    path = tmp_path / "drop"
    path.mkdir()
    return path


def a_store(tmp_path: Path, roots: list[Path], **options) -> ArtifactStore:
    limits = {"max_bytes": 1 << 20, "timeout_s": 60.0} | options
    return ArtifactStore(tmp_path / "store", roots, **limits)


def stored(store: ArtifactStore) -> list[str]:
    """Every file the store holds, temporary ones included."""
    return sorted(str(path.relative_to(store.root)) for path in store.root.rglob("*") if path.is_file()) \
        if store.root.exists() else []


def uri(path: Path | str) -> str:
    return f"file://{path}"


def test_a_file_in_the_drop_directory_with_its_digest_is_stored_owner_only_and_no_temporary_file_remains(
        tmp_path, drop):
    (drop / "app").write_bytes(BYTES)
    store = a_store(tmp_path, [drop])

    kept = store.fetch(uri(drop / "app"), DIGEST)

    assert kept == store.path_for(DIGEST) and kept.read_bytes() == BYTES
    assert stored(store) == [f"sha256/{DIGEST.removeprefix('sha256:')}"]
    assert stat.S_IMODE(kept.stat().st_mode) == 0o500
    assert [stat.S_IMODE(d.stat().st_mode) for d in (store.root, store.root / "sha256")] == [0o700, 0o700]
    assert store.verify(DIGEST)


def test_with_the_app_user_s_group_the_store_lets_that_group_enter_and_run_files_but_not_list_them(tmp_path, drop):
    (drop / "app").write_bytes(BYTES)
    store = a_store(tmp_path, [drop], group=os.getgid())

    kept = store.fetch(uri(drop / "app"), DIGEST)

    assert (stat.S_IMODE(kept.stat().st_mode), kept.stat().st_gid) == (0o550, os.getgid())
    assert [stat.S_IMODE(d.stat().st_mode) for d in (store.root, store.root / "sha256")] == [0o710, 0o710]


def test_a_file_whose_bytes_are_not_the_claimed_digest_leaves_nothing_and_its_hash_is_not_told(tmp_path, drop):
    secret = drop / "secret"
    secret.write_bytes(b"password=hunter2\n")
    secret.chmod(0o600)
    store = a_store(tmp_path, [drop])

    with pytest.raises(DigestMismatch) as refused:
        store.fetch(uri(secret), DIGEST)

    assert str(refused.value) == "digest mismatch: the file's bytes do not match the claimed digest"
    assert not HEX.search(str(refused.value))
    assert stored(store) == []


def test_a_host_file_outside_the_roots_is_refused_even_with_its_real_digest(tmp_path, drop):
    store = a_store(tmp_path, [drop])

    with pytest.raises(ArtifactUnreachable, match="outside the artifact roots") as refused:
        store.fetch("file:///etc/passwd", file_digest(Path("/etc/passwd")))

    assert "root:" not in str(refused.value) and stored(store) == []


@pytest.mark.parametrize("tail", [
    pytest.param("/../../../etc/passwd", id="dot-dot"),
    pytest.param("/%2e%2e/%2e%2e/%2e%2e/etc/passwd", id="percent-encoded dot-dot"),
    pytest.param("/%2E%2E/%2e%2E/%2e%2e/etc/passwd", id="upper-case percent-encoded dot-dot"),
    pytest.param("/./app", id="a dot component"),
    pytest.param("//app", id="an empty component"),
    pytest.param("/app%00.pyz", id="an encoded NUL"),
])
def test_a_path_that_is_not_normalised_is_refused_before_anything_is_opened(tmp_path, drop, tail):
    (drop / "app").write_bytes(BYTES)
    store = a_store(tmp_path, [drop])

    with pytest.raises(ArtifactUnreachable, match="not absolute and normalised"):
        store.fetch(uri(drop) + tail, DIGEST)
    assert stored(store) == []


def test_percent_decoding_happens_once_so_an_encoded_percent_stays_a_plain_file_name(tmp_path, drop):
    (drop / "%2e%2e").write_bytes(BYTES)
    store = a_store(tmp_path, [drop])

    assert store.fetch(uri(drop) + "/%252e%252e", DIGEST) == store.path_for(DIGEST)


@pytest.mark.parametrize("host", ["elsewhere", "127.0.0.1", "user@localhost"])
def test_a_uri_with_a_host_part_is_refused(tmp_path, drop, host):
    (drop / "app").write_bytes(BYTES)

    with pytest.raises(ArtifactUnreachable, match="host part"):
        a_store(tmp_path, [drop]).fetch(f"file://{host}{drop}/app", DIGEST)


def test_localhost_names_this_machine_and_is_accepted(tmp_path, drop):
    (drop / "app").write_bytes(BYTES)

    assert a_store(tmp_path, [drop]).fetch(f"file://localhost{drop}/app", DIGEST).exists()


@pytest.mark.parametrize("scheme_uri", ["https://ci.example/app", "ftp://ci/app", "/just/a/path"])
def test_schemes_other_than_file_are_refused(tmp_path, drop, scheme_uri):
    with pytest.raises(ArtifactUnreachable, match="unsupported URI scheme"):
        a_store(tmp_path, [drop]).fetch(scheme_uri, DIGEST)


def test_a_symlink_in_the_root_pointing_out_of_it_is_refused(tmp_path, drop):
    (drop / "passwd").symlink_to("/etc/passwd")
    store = a_store(tmp_path, [drop])

    with pytest.raises(ArtifactUnreachable, match="symbolic link"):
        store.fetch(uri(drop / "passwd"), file_digest(Path("/etc/passwd")))
    assert stored(store) == []


def test_a_symlink_is_refused_even_when_it_points_inside_the_root(tmp_path, drop):
    (drop / "app").write_bytes(BYTES)
    (drop / "alias").symlink_to(drop / "app")

    with pytest.raises(ArtifactUnreachable, match="symbolic link"):
        a_store(tmp_path, [drop]).fetch(uri(drop / "alias"), DIGEST)


def test_a_symlinked_directory_below_the_root_is_refused(tmp_path, drop):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app").write_bytes(BYTES)
    (drop / "builds").symlink_to(outside)
    store = a_store(tmp_path, [drop])

    with pytest.raises(ArtifactUnreachable, match="'builds' is a symbolic link"):
        store.fetch(uri(drop / "builds" / "app"), DIGEST)
    assert stored(store) == []


def test_a_root_that_is_itself_a_symlink_is_resolved_once_and_files_under_it_are_accepted(tmp_path, drop):
    (drop / "ci").mkdir()
    (drop / "ci" / "app").write_bytes(BYTES)
    (tmp_path / "drop-link").symlink_to(drop)
    store = a_store(tmp_path, [tmp_path / "drop-link"])

    assert store.fetch(uri(tmp_path / "drop-link" / "ci" / "app"), DIGEST).exists()
    assert store.fetch(uri(drop / "ci" / "app"), DIGEST).exists()  # the root's real path names it too


def test_a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer(tmp_path, drop):
    fifo = drop / "fifo"
    os.mkfifo(fifo)
    store = a_store(tmp_path, [drop])

    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(store.fetch, uri(fifo), DIGEST)
        try:
            with pytest.raises(ArtifactUnreachable, match="is a FIFO"):
                future.result(timeout=5)
        finally:
            _release_reader(fifo)
    assert time.monotonic() - started < 1.0


def _release_reader(fifo: Path) -> None:
    """Open the write end, so that a reader blocked in open() returns and a failing test cannot hang."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting: nothing to release


def test_a_sparse_file_over_the_size_limit_is_refused_by_its_size_without_being_read(tmp_path, drop):
    sparse = drop / "huge"
    with sparse.open("wb") as handle:
        handle.truncate(2 << 30)  # 2 GiB of holes
    store = a_store(tmp_path, [drop], max_bytes=1 << 20)

    started = time.monotonic()
    with pytest.raises(ArtifactUnreachable, match=f"has {2 << 30} bytes, more than the limit of {1 << 20}"):
        store.fetch(uri(sparse), DIGEST)
    assert time.monotonic() - started < 0.5 and stored(store) == []


def test_a_file_that_holds_more_than_its_size_said_is_cut_off_at_the_limit(tmp_path):
    # /proc files report size 0 and hold more: the stream stops at the limit, not at the size fstat gave.
    store = a_store(tmp_path, [Path("/proc/self")], max_bytes=64)

    with pytest.raises(ArtifactUnreachable, match="grew past the limit of 64 bytes") as refused:
        store.fetch("file:///proc/self/status", DIGEST)
    assert "Name:" not in str(refused.value) and stored(store) == []


def test_a_character_device_is_refused_by_fstat_even_under_a_root(tmp_path):
    store = a_store(tmp_path, [Path("/dev")])

    with pytest.raises(ArtifactUnreachable, match="is a character device"):
        store.fetch("file:///dev/zero", DIGEST)
    assert stored(store) == []


def test_a_device_outside_the_roots_or_behind_a_symlink_is_refused(tmp_path, drop):
    (drop / "zero").symlink_to("/dev/zero")
    store = a_store(tmp_path, [drop])

    with pytest.raises(ArtifactUnreachable, match="outside the artifact roots"):
        store.fetch("file:///dev/zero", DIGEST)
    with pytest.raises(ArtifactUnreachable, match="symbolic link"):
        store.fetch(uri(drop / "zero"), DIGEST)


def test_a_directory_is_refused(tmp_path, drop):
    (drop / "builds").mkdir()

    with pytest.raises(ArtifactUnreachable, match="is a directory"):
        a_store(tmp_path, [drop]).fetch(uri(drop / "builds"), DIGEST)


def test_a_hard_link_is_refused_as_it_may_be_another_file_of_the_host(tmp_path, drop):
    (drop / "app").write_bytes(BYTES)
    os.link(drop / "app", drop / "again")

    with pytest.raises(ArtifactUnreachable, match="2 hard links"):
        a_store(tmp_path, [drop]).fetch(uri(drop / "again"), DIGEST)


def test_a_fetch_that_outlasts_its_deadline_fails_with_a_reason_and_keeps_nothing(tmp_path, drop):
    (drop / "app").write_bytes(BYTES)
    ticks = itertools.count(step=10.0)  # every look at the clock: 10 s later
    store = a_store(tmp_path, [drop], timeout_s=5.0, clock=lambda: next(ticks))

    with pytest.raises(ArtifactUnreachable, match="took longer than 5 s"):
        store.fetch(uri(drop / "app"), DIGEST)
    assert stored(store) == []


def test_a_rebuild_whose_source_file_is_gone_gets_the_bytes_the_store_holds_under_the_claimed_digest(tmp_path, drop):
    (drop / "app").write_bytes(BYTES)
    store = a_store(tmp_path, [drop])
    store.fetch(uri(drop / "app"), DIGEST)
    (drop / "app").unlink()

    assert store.fetch(uri(drop / "app"), DIGEST) == store.path_for(DIGEST)
    with pytest.raises(ArtifactUnreachable, match="no file at"):
        store.fetch(uri(drop / "app"), "sha256:" + "0" * 64)


def test_a_replayed_build_from_before_the_roots_gets_the_stored_bytes_and_its_path_is_never_read(tmp_path, drop):
    (drop / "app").write_bytes(BYTES)
    store = a_store(tmp_path, [drop])
    store.fetch(uri(drop / "app"), DIGEST)

    assert store.fetch("file:///etc/passwd", DIGEST) == store.path_for(DIGEST)  # the claimed bytes, not passwd
    assert stored(store) == [f"sha256/{DIGEST.removeprefix('sha256:')}"]


def test_a_mismatch_is_never_excused_by_what_the_store_holds(tmp_path, drop):
    (drop / "app").write_bytes(BYTES)
    store = a_store(tmp_path, [drop])
    store.fetch(uri(drop / "app"), DIGEST)
    (drop / "other").write_bytes(b"other bytes\n")

    with pytest.raises(DigestMismatch):
        store.fetch(uri(drop / "other"), DIGEST)


def test_a_read_error_in_the_middle_of_a_copy_leaves_no_temporary_file(tmp_path, drop, monkeypatch):
    (drop / "app").write_bytes(BYTES * 1000)
    store = a_store(tmp_path, [drop])
    reads = itertools.count()

    def failing_read(source, size):
        if next(reads) == 1:  # the second chunk: the first is already in the temporary file
            raise ArtifactUnreachable("cannot read the file: Input/output error")
        return source.read(min(size, 1024))

    monkeypatch.setattr("shared.artifacts._read", failing_read)
    with pytest.raises(ArtifactUnreachable, match="Input/output error"):
        store.fetch(uri(drop / "app"), "sha256:" + hashlib.sha256(BYTES * 1000).hexdigest())
    assert next(reads) > 1 and stored(store) == []
