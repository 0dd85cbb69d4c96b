-- Signed checkpoints of the ledger: its size, the hash of its last entry and the Merkle root of every entry's
-- hash (shared/merkle.py), signed with the ledger's key; an evidence bundle proves its entries against one.
create table checkpoints (
    size bigint primary key,
    head_seq bigint not null,
    head text not null,
    root text not null,
    signed_at timestamptz not null,
    statement bytea not null,
    signature text not null
);
