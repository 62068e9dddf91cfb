-- Arbor control-plane schema, version 4: teams. Every API key belongs to a
-- team, and so does everything a key creates (sandboxes, snapshots, templates
-- and their builds, metric samples). Rows from before this migration belong
-- to the default team, so a single-tenant server works on as before.
-- Same portable subset as 0001. The `team_id` columns have no foreign key:
-- SQLite refuses a REFERENCES column added with a non-NULL default, and teams
-- are never deleted.

CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
INSERT INTO teams (id, name, created_at) VALUES ('default', 'default', 0);

ALTER TABLE api_keys ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
-- 1: the key may manage teams and keys (the admin routes).
ALTER TABLE api_keys ADD COLUMN admin BIGINT NOT NULL DEFAULT 0;
-- The server's own key (generated on first start, or given with --api-key)
-- is the default team's admin key; those are the names the server gives it.
UPDATE api_keys SET admin = 1 WHERE name IN ('generated', 'operator');
CREATE INDEX api_keys_team ON api_keys (team_id, created_at, id);

ALTER TABLE sandboxes ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sandboxes_team_order ON sandboxes (team_id, started_at, id);

ALTER TABLE snapshots ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX snapshots_team_order ON snapshots (team_id, created_at, id);

-- Samples outlive their sandbox, so they carry the team themselves.
ALTER TABLE metrics ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';

-- Template names become unique per team instead of server-wide. Neither
-- engine can drop a column's UNIQUE constraint in place portably, so both
-- tables are rebuilt: the builds first (they reference the templates), the
-- old tables dropped children first (so no cascade runs), then renamed.
CREATE TABLE templates_new (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (team_id, name)
);
INSERT INTO templates_new (id, team_id, name, created_at)
    SELECT id, 'default', name, created_at FROM templates;

CREATE TABLE template_builds_new (
    id           TEXT PRIMARY KEY,
    template_id  TEXT NOT NULL REFERENCES templates_new (id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('waiting', 'building', 'ready', 'error')),
    cpu_count    BIGINT NOT NULL,
    memory_mb    BIGINT NOT NULL,
    disk_mb      BIGINT NOT NULL,
    request      TEXT,
    node_ref     TEXT,
    checkpoint   TEXT,
    envd_token   TEXT,
    reason       TEXT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    UNIQUE (template_id, version)
);
INSERT INTO template_builds_new (id, template_id, version, status, cpu_count, memory_mb, disk_mb, request,
        node_ref, checkpoint, envd_token, reason, created_at, finished_at)
    SELECT id, template_id, version, status, cpu_count, memory_mb, disk_mb, request,
        node_ref, checkpoint, envd_token, reason, created_at, finished_at FROM template_builds;

DROP TABLE template_builds;
DROP TABLE templates;
-- SQLite rewrites template_builds_new's reference to the new name; PostgreSQL
-- references tables by oid.
ALTER TABLE templates_new RENAME TO templates;
ALTER TABLE template_builds_new RENAME TO template_builds;
CREATE INDEX template_builds_status ON template_builds (status);
