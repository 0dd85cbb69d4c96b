create table slots (
    service text not null,
    env text not null,
    port integer not null unique,
    pid integer,
    version text,
    digest text,
    config_version text,
    artifact_path text,
    state text not null default 'empty',
    updated_at timestamptz not null default now(),
    primary key (service, env)
);
create table deployments (
    deployment_id text primary key,
    service text not null,
    env text not null,
    version text not null,
    digest text not null,
    config_version text not null,
    purpose text not null,
    status text not null,
    reason text,
    started_at timestamptz not null default now(),
    finished_at timestamptz
);
create table driver_calls (
    id bigserial primary key,
    service text not null,
    env text not null,
    digest text not null,
    action text not null,
    at timestamptz not null default now()
);
