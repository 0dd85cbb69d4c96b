-- The correlation id of the event that opened each promotion (the build's, carried along the chain): a verdict a
-- timer gives later has no cause event, and carries this one (null for promotions opened before it was kept).
alter table promotions add column correlation_id text;
