create table entries (
    seq bigserial primary key,
    event_id text not null unique,
    topic text not null,
    type text not null,
    service text not null,
    version text,
    env text,
    event_time timestamptz not null,
    canonical bytea not null,
    prev_hash text not null,
    hash text not null,
    recorded_at timestamptz not null default now()
);
create index entries_by_service on entries (service, seq);
create table pipelines (
    service text primary key,
    pipeline_version text not null,
    environments jsonb not null
);
create table environments (
    service text not null,
    env text not null,
    version text,
    digest text,
    config_version text,
    state text not null,
    updated_at timestamptz not null,
    primary key (service, env)
);
create table waiting (
    service text not null,
    env text not null,
    version text not null,
    digest text not null,
    outcome text not null,
    reasons jsonb not null,
    primary key (service, env, version)
);
create table artifacts (
    service text not null,
    version text not null,
    digest text not null,
    author text not null,
    primary key (service, version)
);
-- The ledger is append-only: rows are never updated or deleted by the service.
create function entries_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'the ledger is append-only';
end $$;
create trigger entries_no_update before update or delete on entries
    for each statement when (current_setting('promote.ledger_maintenance', true) is distinct from 'on')
    execute function entries_append_only();
