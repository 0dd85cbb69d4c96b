-- Canaries in progress, durable: a canary is a row moving through its steps, advanced by the deployer's canary
-- task (services/deployer/canaries.py), so that no handler waits for one and a restarted deployer resumes each at
-- the step it was at. `published`: the router takes the step's share (false: the step is to be published, its
-- analysis not begun); the step's analysis reads the router's access log from `log_offset` on, so it survives a
-- restart. state: running, paused, done. `order_event`: the deployment order, the cause of every event emitted.
create table canaries (
    deployment_id text primary key,
    service text not null,
    env text not null,
    order_event bytea not null,
    target jsonb not null,
    strategy jsonb not null,
    lane text not null check (lane in ('blue', 'green')),
    serving text check (serving in ('blue', 'green')),
    pid integer,
    step integer not null default 0,
    published boolean not null default false,
    step_started_at timestamptz,
    log_offset bigint not null default 0,
    due_at timestamptz not null default now(),
    checks jsonb not null default '{}',
    state text not null default 'running' check (state in ('running', 'paused', 'done')),
    updated_at timestamptz not null default now()
);
create unique index one_canary_per_environment on canaries (service, env) where state <> 'done';
create index canaries_due on canaries (due_at) where state = 'running';
