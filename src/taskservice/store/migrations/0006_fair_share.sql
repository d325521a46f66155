-- Per-user quotas and fair share: both count a user's queued and running tasks.

-- The quota counts a user's active tasks on each submit, and each claim counts running tasks
-- per user and walks the users with queued tasks (one index probe each, store.fair_share);
-- this keeps all of it to the few active rows instead of a user's whole history.
CREATE INDEX tasks_active_by_user ON tasks (status, user_id) WHERE status IN ('queued', 'running');

-- How often a queued task stepped aside for another user's (taskservice.store.fair_share): its
-- message went to the back of the queue. Bounded, so a task is never put off for ever.
ALTER TABLE tasks ADD COLUMN deferrals integer NOT NULL DEFAULT 0;
