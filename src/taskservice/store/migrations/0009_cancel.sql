-- Cancelling a task: `cancelled` is a final status, and a cancel asked of a running task is
-- recorded on its row, where its holder (or whoever takes it over) finds it.

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN
    ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'error', 'cancelled'));

-- When the owner asked to cancel the task while it ran; the outcome stored after that is
-- `cancelled`, with the output read until the kill.
ALTER TABLE tasks ADD COLUMN cancel_requested_at timestamptz;

-- Each worker looks, twice a second, for cancels of the tasks it runs: few rows, always.
CREATE INDEX tasks_cancel_requested ON tasks (claimed_by)
    WHERE status = 'running' AND cancel_requested_at IS NOT NULL;

-- Listing a user's tasks newest first, in pages (keyset on created_at, id), with or without
-- a status filter.
CREATE INDEX tasks_user_listing ON tasks (user_id, created_at DESC, id DESC);
CREATE INDEX tasks_user_status_listing ON tasks (user_id, status, created_at DESC, id DESC);
DROP INDEX tasks_user_created;
