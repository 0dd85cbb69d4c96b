-- The build's source commit and the signatures and attestations intake found beside the artifact
-- (artifact.registered's commit and supply_chain), for signature and provenance gates; null before.
alter table artifacts add column source_commit text;
alter table artifacts add column supply_chain jsonb;
