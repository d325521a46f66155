-- Leases judged only by a worker that has itself reached the database for a whole lease, claims
-- that recognise their own earlier write, and a bound on how often one task is sent anew.

-- The start of the worker's current unbroken run of heartbeats (a gap of half a lease breaks it).
-- The default keeps a worker of the version before this one beating during a rolling upgrade.
ALTER TABLE workers ADD COLUMN connected_since timestamptz;
UPDATE workers SET connected_since = heartbeat_at;
ALTER TABLE workers ALTER COLUMN connected_since SET DEFAULT now();
ALTER TABLE workers ALTER COLUMN connected_since SET NOT NULL;

-- Set by each claim: a retried claim whose first answer was lost finds its own token.
ALTER TABLE tasks ADD COLUMN claim_token uuid;

-- How often the task's id was sent anew since its last claim (the sweeper, idempotent repeats).
ALTER TABLE tasks ADD COLUMN resends integer NOT NULL DEFAULT 0;
