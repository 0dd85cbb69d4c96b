create table artifacts (
    service text not null,
    version text not null,
    digest text not null,
    kind text not null,
    author text not null,
    commit text not null,
    build_event_id text not null,
    promotion_requested boolean not null default false,
    registered_at timestamptz not null default now(),
    primary key (service, version)
);
create table pipelines (
    service text primary key,
    pipeline_version text not null,
    first_env text not null
);
