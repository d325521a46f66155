-- Files in and artifacts out: the files a task is given (placed beside its code before it
-- starts) and the files it left in ./out/ (GET /result lists them, GET
-- /result/{id}/artifacts/{name} serves them). Both are the user's data: deleted with the task's
-- code and output (retention, DELETE /task/{id}; store/retention.py).

CREATE TABLE task_files (
    task_id  uuid     NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    position smallint NOT NULL,  -- the order they were given in
    name     text     NOT NULL,
    content  bytea    NOT NULL,
    PRIMARY KEY (task_id, name)
);

-- The type is sniffed once, when the outcome is stored (content_types.py); sha256 is hex, the
-- artifact's ETag.
CREATE TABLE task_artifacts (
    task_id      uuid    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name         text    NOT NULL,
    size         integer NOT NULL CHECK (size >= 0),
    content_type text    NOT NULL,
    sha256       text    NOT NULL,
    content      bytea   NOT NULL,
    PRIMARY KEY (task_id, name)
);

-- Some files in ./out/ were left out for MAX_ARTIFACTS or MAX_ARTIFACT_BYTES.
ALTER TABLE tasks ADD COLUMN artifacts_truncated boolean NOT NULL DEFAULT false;
