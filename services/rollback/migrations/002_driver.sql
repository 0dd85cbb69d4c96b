alter table verified_releases add column driver text not null default 'local';
