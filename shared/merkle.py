"""A Merkle tree over the ledger's entry hashes (RFC 9162 §2.1, as Certificate Transparency logs use it).

The ledger's entries form a hash chain: proving one entry belongs to the chain that ends at a signed head would
need every later entry's bytes. The ledger's signed checkpoint therefore also names the Merkle root of its
entry hashes, in chain order: an inclusion proof of one entry is then log2(size) hashes. Leaves are the raw
32 bytes of each entry's hash; a leaf's hash is SHA-256(0x00 || leaf), a node's SHA-256(0x01 || left || right),
and a tree of n leaves splits at the largest power of two below n.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """The tree of `leaves`, with the hashes of its subtrees kept as they are computed (one proof after another
    reuses them: k proofs over n leaves cost about n + k·log n hashes)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        self.leaves = leaves
        self._hashes: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        return len(self.leaves)

    def root(self) -> bytes:
        return self._subtree(0, len(self.leaves))

    def _subtree(self, start: int, end: int) -> bytes:
        if end - start == 1:
            return leaf_hash(self.leaves[start])
        if (start, end) not in self._hashes:
            middle = start + _split(end - start)
            self._hashes[(start, end)] = node_hash(self._subtree(start, middle), self._subtree(middle, end))
        return self._hashes[(start, end)]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path of leaf `index` (RFC 9162 §2.1.3.1), bottom up."""
        if not 0 <= index < len(self.leaves):
            raise IndexError(f"leaf {index} is not in a tree of {len(self.leaves)}")
        proof: list[bytes] = []
        start, end = 0, len(self.leaves)
        while end - start > 1:
            middle = start + _split(end - start)
            if index < middle:
                proof.append(self._subtree(middle, end))
                end = middle
            else:
                proof.append(self._subtree(start, middle))
                start = middle
        return proof[::-1]


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root that `proof` of `leaf` at `index` in a tree of `size` leads to (RFC 9162 §2.1.3.2), or None if
    the proof cannot be one for that position (wrong length)."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    result = leaf_hash(leaf)
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return result if sn == 0 else None


class Frontier:
    """The root of a growing tree without its leaves: the perfect subtrees its size decomposes into, largest
    first (appending is amortised one hash; the ledger keeps one to sign checkpoints as entries arrive)."""

    def __init__(self) -> None:
        self.size = 0
        self._subtrees: list[tuple[int, bytes]] = []

    def append(self, leaf: bytes) -> None:
        self._subtrees.append((1, leaf_hash(leaf)))
        self.size += 1
        while len(self._subtrees) > 1 and self._subtrees[-1][0] == self._subtrees[-2][0]:
            (size, right), (_, left) = self._subtrees.pop(), self._subtrees.pop()
            self._subtrees.append((2 * size, node_hash(left, right)))

    def root(self) -> bytes:
        """The tree's root: its subtrees folded from the right (the tree splits at the largest power of two)."""
        if not self._subtrees:
            raise ValueError("an empty tree has no root")
        result = self._subtrees[-1][1]
        for _, subtree in reversed(self._subtrees[:-1]):
            result = node_hash(subtree, result)
        return result
