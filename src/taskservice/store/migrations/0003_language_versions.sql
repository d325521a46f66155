-- The version of each language as found in its image by a worker, for GET /languages. The API
-- has no access to Docker, and an image pulled from a registry may carry another version than
-- a locally built one, so the workers, which run the images, report what they find.
CREATE TABLE language_versions (
    name        text        PRIMARY KEY,
    version     text        NOT NULL,
    image       text        NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now()
);
