-- Environments behind the router (blue/green and canary): the router's port, the lane that takes
-- the traffic, and two lanes (blue, green), each an app process on a port of its own.
create table routes (
    service text not null,
    env text not null,
    port integer not null unique,
    live text check (live in ('blue', 'green')),
    canary_weight integer not null default 0,
    updated_at timestamptz not null default now(),
    primary key (service, env)
);
create table lanes (
    service text not null,
    env text not null,
    lane text not null check (lane in ('blue', 'green')),
    port integer not null unique,
    pid integer,
    version text,
    digest text,
    config_version text,
    state text not null default 'empty',
    retire_at timestamptz,
    updated_at timestamptz not null default now(),
    primary key (service, env, lane)
);
