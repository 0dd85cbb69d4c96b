-- What the container driver needs to run a verified release again: its image (by digest), replicas, resources.
alter table verified_releases add column location text;
alter table verified_releases add column replicas integer not null default 1;
alter table verified_releases add column resources jsonb;
