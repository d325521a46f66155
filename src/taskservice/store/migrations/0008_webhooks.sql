-- Completion webhooks: where a task's result is POSTed when it ends, the per-user signing
-- secret, and one delivery row per ended task with a callback, which the dispatchers work off.

ALTER TABLE tasks ADD COLUMN callback_url text;
-- Made lazily (GET /me, or the first delivery), so existing accounts need no backfill.
ALTER TABLE users ADD COLUMN webhook_secret text;

CREATE TABLE webhook_deliveries (
    task_id          uuid        PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    state            text        NOT NULL DEFAULT 'pending'
                                 CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
-- The dispatchers' query: the pending rows that are due, oldest first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';

-- The delivery is made by the very statement that makes the task final, in its transaction: a
-- task cannot end without its delivery, nor a delivery exist for a task that did not end, and
-- no code path that ends a task (finish, fail_unqueued, giving up, and any added later) can
-- forget it. Final means anything but queued and running, as TaskStatus.is_final says.
CREATE FUNCTION webhook_delivery_for_ended_task() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (task_id) VALUES (NEW.id) ON CONFLICT (task_id) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_webhook_on_end
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running')
          AND NEW.callback_url IS NOT NULL)
    EXECUTE FUNCTION webhook_delivery_for_ended_task();
