create table verified_releases (
    seq bigserial primary key,
    service text not null,
    env text not null,
    version text not null,
    digest text not null,
    config jsonb not null,
    config_version text not null,
    verified_at timestamptz not null default now()
);
create index verified_releases_by_env on verified_releases (service, env, seq desc);
create table current_releases (
    service text not null,
    env text not null,
    version text not null,
    digest text not null,
    config_version text not null,
    state text not null,
    primary key (service, env)
);
