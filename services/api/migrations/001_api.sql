-- API tokens for robots and the local stack: only a hash of the secret is kept; revoking is setting revoked_at.
create table tokens (
    id text primary key,
    subject text not null,
    bindings jsonb not null,
    groups jsonb not null default '[]'::jsonb,
    secret_sha256 text not null,
    created_by text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz,
    revoked_at timestamptz
);
