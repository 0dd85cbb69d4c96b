-- An entry is known by (topic, service, event id), like every inbox (shared/inbox.py): an id squatted on
-- another topic no longer hides the real event from the ledger.
alter table entries drop constraint if exists entries_event_id_key;
create unique index entries_identity on entries (topic, service, event_id);
