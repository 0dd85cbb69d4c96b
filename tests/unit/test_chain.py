"""Unit tests for shared.chain: the hash chain detects the first entry that was tampered with."""

import hashlib

import pytest

from shared.chain import GENESIS, canonical_bytes, first_broken_link, link


def a_chain(length: int = 5) -> list[tuple[int, str, bytes, str]]:
    """Entries (seq, prev_hash, canonical, hash) linked from the genesis hash; seqs start at 101."""
    entries, prev = [], GENESIS
    for index in range(length):
        canonical = canonical_bytes({"id": f"evt-{index}", "type": "build.completed", "data": {"n": index}})
        entry_hash = link(prev, canonical)
        entries.append((101 + index, prev, canonical, entry_hash))
        prev = entry_hash
    return entries


def tampered(entries, index: int, *, prev_hash=None, canonical=None, stored_hash=None):
    seq, prev, body, entry_hash = entries[index]
    changed = (seq, prev_hash or prev, canonical or body, stored_hash or entry_hash)
    return entries[:index] + [changed] + entries[index + 1:]


def test_an_intact_chain_has_no_broken_link():
    assert first_broken_link(a_chain()) is None


def test_an_empty_chain_has_no_broken_link():
    assert first_broken_link([]) is None


def test_link_is_the_sha256_of_the_previous_hash_and_the_canonical_bytes():
    assert link(GENESIS, b"{}") == hashlib.sha256(GENESIS.encode() + b"{}").hexdigest()
    assert link(GENESIS, b"{}") != link("1" * 64, b"{}")


@pytest.mark.parametrize("index", [0, 2, 4])
@pytest.mark.parametrize("tamper", [
    pytest.param(lambda entry: dict(canonical=entry[2].replace(b'"n":', b'"n":9')), id="its event bytes changed"),
    pytest.param(lambda entry: dict(stored_hash="f" * 64), id="its stored hash changed"),
    pytest.param(lambda entry: dict(prev_hash="e" * 64), id="its prev_hash changed"),
])
def test_the_first_broken_link_is_the_entry_that_was_tampered_with(index, tamper):
    entries = a_chain()
    broken = tampered(entries, index, **tamper(entries[index]))
    assert broken != entries
    assert first_broken_link(broken) == entries[index][0]


def test_a_chain_that_does_not_start_at_genesis_is_broken_at_its_first_entry():
    entries = a_chain(3)
    restarted = [(seq, "1" * 64 if seq == 101 else prev, body, h) for seq, prev, body, h in entries]
    assert first_broken_link(restarted) == 101


def test_an_entry_removed_from_the_middle_breaks_the_chain_at_its_successor():
    entries = a_chain()
    assert first_broken_link(entries[:2] + entries[3:]) == entries[3][0]


def test_canonical_bytes_do_not_depend_on_key_order():
    one = {"id": "e1", "data": {"b": 2, "a": 1}, "type": "t"}
    other = {"type": "t", "data": {"a": 1, "b": 2}, "id": "e1"}
    assert list(one) != list(other)
    assert canonical_bytes(one) == canonical_bytes(other)
    assert canonical_bytes(one) == b'{"data":{"a":1,"b":2},"id":"e1","type":"t"}'


def test_canonical_bytes_differ_when_a_value_differs():
    assert canonical_bytes({"a": "1"}) != canonical_bytes({"a": 1})


def test_canonical_bytes_keep_non_ascii_text_as_utf8():
    assert canonical_bytes({"who": "Zoë"}) == '{"who":"Zoë"}'.encode()
