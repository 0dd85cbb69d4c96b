-- An environment found drifted (drift.detected): what differs, since when, and what the deployer does about it;
-- null once drift.resolved says it runs what was promoted again. Fed by promotion.deployments, as the rest of
-- the row is.
alter table environments add column drift jsonb;
