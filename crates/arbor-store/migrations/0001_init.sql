-- Arbor control-plane schema, version 1.
-- Portable between SQLite and PostgreSQL: only TEXT, BIGINT and DOUBLE PRECISION
-- columns (booleans are 0/1, times are unix milliseconds), because the store
-- reads rows through sqlx's `Any` driver, which maps exactly these types.

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,  -- hex SHA-256 of the secret
    prefix       TEXT NOT NULL,         -- first characters of the secret, for display
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);

CREATE TABLE sandboxes (
    id               TEXT PRIMARY KEY,
    template_id      TEXT NOT NULL,
    alias            TEXT,
    state            TEXT NOT NULL CHECK (state IN ('running', 'paused', 'killed')),
    node_id          TEXT NOT NULL,
    cpu_count        BIGINT NOT NULL,
    memory_mb        BIGINT NOT NULL,
    disk_mb          BIGINT NOT NULL,
    metadata         TEXT NOT NULL,     -- JSON object string -> string (copy of sandbox_metadata)
    env_vars         TEXT NOT NULL,     -- JSON object string -> string
    envd_token       TEXT NOT NULL UNIQUE,
    traffic_token    TEXT,
    secure           BIGINT NOT NULL,
    allow_internet   BIGINT NOT NULL,
    network          TEXT,              -- JSON, as given at create
    auto_pause       BIGINT NOT NULL,
    auto_resume      BIGINT NOT NULL,
    idle_timeout_s   BIGINT,
    started_at       BIGINT NOT NULL,
    end_at           BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    paused_at        BIGINT,
    host_addr        TEXT,
    init_pid         BIGINT,
    envd_version     TEXT NOT NULL,
    domain           TEXT
);
CREATE INDEX sandboxes_order ON sandboxes (started_at, id);
CREATE INDEX sandboxes_state_end ON sandboxes (state, end_at);

-- One row per metadata pair, so that list filters are plain SQL on both engines.
CREATE TABLE sandbox_metadata (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, key)
);
CREATE INDEX sandbox_metadata_pair ON sandbox_metadata (key, value);

-- No foreign key: metrics outlive their sandbox until pruned.
CREATE TABLE metrics (
    sandbox_id    TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    cpu_count     BIGINT NOT NULL,
    cpu_used_pct  DOUBLE PRECISION NOT NULL,
    mem_total_mib BIGINT NOT NULL,
    mem_used_mib  BIGINT NOT NULL,
    disk_total    BIGINT NOT NULL,
    disk_used     BIGINT NOT NULL
);
CREATE INDEX metrics_sandbox_ts ON metrics (sandbox_id, ts);
CREATE INDEX metrics_ts ON metrics (ts);
