-- The pipeline's graph as applied: each environment, in order, with the environments a release must be verified
-- in before it may enter (`after`, or the previous one in a line) and whether all or any of them. Status and
-- audit show it. Null for a row projected before this column: shown as a line until the next pipeline.applied or
-- a rebuild (promote replay --rebuild) fills it.
alter table pipelines add column graph jsonb;
