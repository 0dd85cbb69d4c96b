create table pipelines (
    service text primary key,
    pipeline_version text not null,
    definition jsonb not null
);
create table artifacts (
    service text not null,
    version text not null,
    digest text not null,
    author text not null,
    checks jsonb not null,
    primary key (service, version)
);
create table promotions (
    service text not null,
    version text not null,
    env text not null,
    digest text not null,
    status text not null check (status in ('pending', 'passed', 'failed')),
    reasons jsonb not null default '[]',
    updated_at timestamptz not null default now(),
    primary key (service, version, env)
);
create table evidence (
    service text not null,
    digest text not null,
    env text not null,
    check_name text not null,
    result text not null,
    primary key (service, digest, env, check_name)
);
create table approvals (
    service text not null,
    version text not null,
    env text not null,
    approver text not null,
    decision text not null check (decision in ('granted', 'rejected')),
    primary key (service, version, env, approver)
);
create table verifications (
    service text not null,
    env text not null,
    digest text not null,
    version text not null,
    verified_at timestamptz not null default now(),
    primary key (service, env, digest)
);
