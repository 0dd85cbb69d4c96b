-- The canary lane's own port, carried by its deployment.progressed events: a rebuilt deployer learns the lanes'
-- ports from its own events (services/deployer/recovery.py).
alter table canaries add column lane_port integer;
-- Deployments a rebuild found in flight whose orders will not be delivered again: the deployer finishes each
-- itself (recovery.resume_rebuilt), from the cause its events derive from, the target and the strategy.
create table resumes (
    deployment_id text primary key,
    cause bytea not null,
    target jsonb not null,
    strategy jsonb not null
);
