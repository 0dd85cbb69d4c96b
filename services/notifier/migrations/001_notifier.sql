-- One row per (subscription, event) to deliver: what to send where, snapshotted when the event was handled,
-- and how its delivery stands. `next_at` is the lease too: a sender takes a row by moving it into the future.
create table deliveries (
    delivery_id text primary key,
    subscription text not null,
    url text not null,
    body bytea not null,
    content_type text not null,
    event_id text not null,
    event_type text not null,
    topic text not null,
    kind text not null,
    max_attempts integer not null,
    attempts integer not null default 0,
    state text not null default 'pending' check (state in ('pending', 'delivered', 'given_up')),
    last_error text,
    next_at timestamptz not null default now(),
    created_at timestamptz not null default now(),
    delivered_at timestamptz
);
create index deliveries_due on deliveries (next_at) where state = 'pending';
