"""The ledger checkpoint's Merkle tree (shared.merkle): RFC 9162's shape, and proofs that hold only as made."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.merkle import Tree, leaf_hash, node_hash, root_from_inclusion


def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(str(i).encode()).digest() for i in range(n)]


def test_the_tree_splits_at_the_largest_power_of_two_below_its_size():
    a, b, c = leaves(3)
    assert Tree([a]).root() == leaf_hash(a)
    assert Tree([a, b, c]).root() == node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c))


def test_rfc_6962_empty_leaf_vector():
    """RFC 6962's test vector: the tree of one empty leaf is SHA-256 of the single byte 0x00."""
    assert Tree([b""]).root().hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_every_leaf_proves_its_place_and_nothing_else_does(case):
    n, index = case
    tree = Tree(leaves(n))
    proof = tree.inclusion_proof(index)
    assert root_from_inclusion(tree.leaves[index], index, n, proof) == tree.root()
    other = (index + 1) % n
    if other != index:
        assert root_from_inclusion(tree.leaves[index], other, n, proof) != tree.root()
    assert root_from_inclusion(b"x" * 32, index, n, proof) != tree.root()
    if proof:
        altered = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
        assert root_from_inclusion(tree.leaves[index], index, n, altered) != tree.root()
        assert root_from_inclusion(tree.leaves[index], index, n, proof[:-1]) != tree.root()


def test_a_position_outside_the_tree_proves_nothing():
    tree = Tree(leaves(4))
    assert root_from_inclusion(tree.leaves[0], 4, 4, tree.inclusion_proof(0)) is None
    assert root_from_inclusion(tree.leaves[0], -1, 4, tree.inclusion_proof(0)) is None


def test_a_frontier_grown_leaf_by_leaf_has_the_root_of_the_whole_tree():
    from shared.merkle import Frontier

    frontier = Frontier()
    for n, leaf in enumerate(leaves(130), start=1):
        frontier.append(leaf)
        assert frontier.size == n and frontier.root() == Tree(leaves(n)).root(), n
