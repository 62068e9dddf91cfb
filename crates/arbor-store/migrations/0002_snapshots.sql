-- Arbor control-plane schema, version 2: snapshots and clones.
-- Same portable subset as 0001 (TEXT and BIGINT, times in unix milliseconds).

-- A captured sandbox (filesystem and memory) that new sandboxes start from.
-- No foreign key to `sandboxes`: a snapshot outlives its origin sandbox.
CREATE TABLE snapshots (
    id           TEXT PRIMARY KEY,
    sandbox_id   TEXT NOT NULL,         -- the origin sandbox
    kind         TEXT NOT NULL CHECK (kind IN ('snapshot', 'clone')),
    state        TEXT NOT NULL CHECK (state IN ('creating', 'ready')),
    names        TEXT NOT NULL,         -- JSON array of strings
    template_id  TEXT NOT NULL,         -- the origin's template
    node_id      TEXT NOT NULL,         -- node holding the image
    cpu_count    BIGINT NOT NULL,
    memory_mb    BIGINT NOT NULL,
    disk_mb      BIGINT NOT NULL,
    env_vars     TEXT NOT NULL,         -- JSON object string -> string
    metadata     TEXT NOT NULL,         -- JSON object string -> string
    envd_version TEXT NOT NULL,
    envd_token   TEXT NOT NULL,         -- the access token the saved envd holds
    memory_bytes BIGINT,                -- image size, known once ready
    created_at   BIGINT NOT NULL
);
CREATE INDEX snapshots_order ON snapshots (created_at, id);
CREATE INDEX snapshots_sandbox ON snapshots (sandbox_id, created_at, id);

-- The snapshot a sandbox was created or cloned from (NULL for a template).
-- No foreign key either: the API refuses to delete a snapshot in use, and
-- killed sandboxes must not pin their snapshot.
ALTER TABLE sandboxes ADD COLUMN snapshot_id TEXT;
CREATE INDEX sandboxes_snapshot ON sandboxes (snapshot_id);
