-- Accounts and tasks. Code, stdin and output are bytea: they may hold NUL bytes, which a
-- PostgreSQL text value cannot, and output may not be valid UTF-8.

CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    username      text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- "Ada" and "ada" are the same account name.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE tasks (
    id                uuid        PRIMARY KEY,
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    language          text        NOT NULL,
    code              bytea       NOT NULL,
    stdin             bytea       NOT NULL DEFAULT '',
    timeout_seconds   integer     NOT NULL CHECK (timeout_seconds > 0),
    memory_mb         integer     NOT NULL CHECK (memory_mb > 0),
    status            text        NOT NULL DEFAULT 'queued' CHECK (status IN
                          ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'error')),
    attempts          integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    exit_code         integer,
    stdout            bytea,
    stderr            bytea,
    stdout_truncated  boolean     NOT NULL DEFAULT false,
    stderr_truncated  boolean     NOT NULL DEFAULT false,
    duration_ms       integer,
    error             text,
    oom_killed        boolean     NOT NULL DEFAULT false,
    signal            text,
    memory_peak_bytes bigint
);
CREATE INDEX tasks_user_created ON tasks (user_id, created_at DESC);
-- The sweeper and the operators look for unfinished tasks; keep that cheap.
CREATE INDEX tasks_unfinished ON tasks (created_at) WHERE status IN ('queued', 'running');
