-- Delivery guarantees: which worker holds a running task, whether that worker is alive, and
-- the idempotency keys of submissions.

-- One row per live worker process, refreshed every few seconds; a worker that stops cleanly
-- deletes its row, one that is killed leaves a row that goes stale.
CREATE TABLE workers (
    id           uuid        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

ALTER TABLE tasks ADD COLUMN claimed_by uuid;
CREATE INDEX tasks_running_claimed_by ON tasks (claimed_by) WHERE status = 'running';

CREATE TABLE idempotency_keys (
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    task_id      uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
