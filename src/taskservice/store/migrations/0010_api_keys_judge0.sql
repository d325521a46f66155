-- Long-lived API keys, command-line arguments for a task's program, and what a submission
-- through the Judge0-compatible API asked for beyond an ordinary task.

-- Only the SHA-256 of a key is kept: a key is 32 random bytes, so a fast hash is as good as a
-- slow one, and checking it costs no bcrypt on every request. Revoking a key deletes its row.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    key_hash     bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at);

-- Appended to the interpreter's argv after the code file.
ALTER TABLE tasks ADD COLUMN arguments text[] NOT NULL DEFAULT '{}';

-- One row per task made through /judge0/submissions: the Judge0 language id it was asked for
-- (71 and 100 are both Python), the output it is judged against, and the limits as asked for,
-- which the submission echoes back.
CREATE TABLE judge0_submissions (
    task_id                uuid    PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    language_id            integer NOT NULL,
    expected_output        bytea,
    command_line_arguments text,
    cpu_time_limit         double precision,
    wall_time_limit        double precision,
    memory_limit           integer
);
