-- The approver's verified groups when they decided (an approval gate may require one: `from`), and the
-- digest they decided on: a decision counts only for those bytes (null: an older event that named none).
alter table approvals add column groups jsonb not null default '[]'::jsonb;
alter table approvals add column digest text;
