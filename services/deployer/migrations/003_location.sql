-- The image a slot or lane runs, `registry/repository@digest` (the container driver); null for a file.
alter table slots add column location text;
alter table lanes add column location text;
