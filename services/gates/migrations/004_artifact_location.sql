-- Where an image is pulled from by digest (artifact.registered's location); null for a file artifact.
alter table artifacts add column location text;
