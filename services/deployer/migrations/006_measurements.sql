-- The PromQL measurements of a canary's current step (services/deployer/measurements.py), kept with it so that
-- a restarted deployer goes on with them: [{"metric", "verdict", "value", "detail"}], emptied at each step.
alter table canaries add column measurements jsonb not null default '[]';
