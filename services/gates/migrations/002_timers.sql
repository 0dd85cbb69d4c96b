-- Durable timers: a pending promotion held by a time gate (soak, change window) is judged again
-- at due_at. One timer per promotion, written in the transaction that records its verdict.
create table timers (
    service text not null,
    version text not null,
    env text not null,
    due_at timestamptz not null,
    primary key (service, version, env)
);
create index timers_due on timers (due_at);
