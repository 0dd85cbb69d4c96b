-- An image's tag found naming other bytes than the registered digest (artifact.tag_moved).
alter table artifacts add column tag text;
alter table artifacts add column tag_moved_to text;
