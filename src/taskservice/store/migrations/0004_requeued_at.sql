-- When the sweeper last sent a task's id anew, so that all workers together resend it rarely.
ALTER TABLE tasks ADD COLUMN requeued_at timestamptz;
