-- What the deployer put into each environment, verified, and expects to keep serving there: the drift checks
-- compare what runs with it, and a restore redeploys it (config holds secret references, never values).
-- state: 'verified', or 'failed' once a deployment that replaced it failed (then nothing is compared).
create table promoted (
    service text not null,
    env text not null,
    slot text not null,
    port integer not null,
    deployment_id text not null,
    version text not null,
    digest text not null,
    config jsonb not null,
    config_version text not null,
    driver text not null,
    location text,
    replicas integer not null,
    resources jsonb,
    routed boolean not null,
    state text not null,
    verified_at timestamptz not null default now(),
    primary key (service, env)
);
-- The drift of each environment: what differs now (null: in sync), the drift.detected of this generation, and
-- whether a restore is owed for it (on_drift: restore). generation counts the detections.
create table drift (
    service text not null,
    env text not null,
    generation integer not null default 0,
    differences jsonb,
    detected_id text,
    detected jsonb,
    restore_owed boolean not null default false,
    checked_at timestamptz,
    primary key (service, env)
);
-- on_drift per environment, from the last pipeline.applied (absent: report).
create table drift_policies (
    service text not null,
    env text not null,
    on_drift text not null check (on_drift in ('report', 'restore')),
    primary key (service, env)
);
create index deployments_in_flight on deployments (service, env) where status = 'started';
