-- Retention: a finished task's code, stdin and output are deleted after RESULT_RETENTION_DAYS,
-- or earlier at its owner's request (DELETE /task/{id}); the row itself stays, so its status
-- can still be read, and these say when and why its data went.
ALTER TABLE tasks ADD COLUMN data_deleted_at timestamptz;
ALTER TABLE tasks ADD COLUMN data_deleted_by text
    CHECK (data_deleted_by IN ('retention', 'owner'));

-- The pruning pass takes the oldest finished tasks whose data is still there, a batch at a
-- time: this index holds exactly those, so a pass that finds nothing due reads next to nothing.
CREATE INDEX tasks_finished_kept ON tasks (finished_at)
    WHERE data_deleted_at IS NULL AND finished_at IS NOT NULL;
