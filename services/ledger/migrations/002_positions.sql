-- Where each entry came from on Kafka, so a replay knows how far the ledger had read.
-- Nullable: entries recorded before this migration have no position.
alter table entries add column kafka_partition integer;
alter table entries add column kafka_offset bigint;
create index entries_by_position on entries (topic, kafka_partition, kafka_offset);
