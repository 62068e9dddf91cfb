-- Arbor control-plane schema, version 3: templates built from a Dockerfile
-- (or the SDK's steps) and their versions. Same portable subset as 0001.

-- A named template; its builds are its versions.
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- One build = one version of a template. `status` moves waiting -> building
-- -> ready | error; only ready versions start sandboxes.
CREATE TABLE template_builds (
    id           TEXT PRIMARY KEY,
    template_id  TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('waiting', 'building', 'ready', 'error')),
    cpu_count    BIGINT NOT NULL,
    memory_mb    BIGINT NOT NULL,
    disk_mb      BIGINT NOT NULL,
    request      TEXT,                  -- the build request (JSON), once started
    node_ref     TEXT,                  -- the layer-store reference of the result
    checkpoint   TEXT,                  -- memory snapshot of the start command, if any
    envd_token   TEXT,                  -- the token the checkpoint's envd holds
    reason       TEXT,                  -- why it failed
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    UNIQUE (template_id, version)
);
CREATE INDEX template_builds_status ON template_builds (status);

-- The template version a sandbox started from (NULL for `base` and
-- snapshots); a version in use by a sandbox that is not killed cannot be
-- deleted.
ALTER TABLE sandboxes ADD COLUMN build_id TEXT;
CREATE INDEX sandboxes_build ON sandboxes (build_id);
