-- Images: where each is fetched by digest, the tag CI gave, and what that tag named when last looked at.
alter table artifacts add column location text;
alter table artifacts add column tag text;
alter table artifacts add column tag_digest text;
alter table artifacts add column tag_checked_at timestamptz;
create index artifacts_tags_to_check on artifacts (tag_checked_at nulls first) where tag is not null;
