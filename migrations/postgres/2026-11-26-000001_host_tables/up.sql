-- The host's own tables (PostgreSQL dialect). Key-value keys use the "C" collation:
-- byte order, as on SQLite and MySQL, whatever the database's default collation.
-- Every time is Unix milliseconds (BIGINT): one representation on the three back-ends,
-- written by the host, never by a database default.
CREATE TABLE plugin_state (
    name TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    version TEXT NOT NULL,
    mode TEXT NOT NULL,
    source TEXT,
    signed_by TEXT,
    installed_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE plugin_kv (
    plugin TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    expires_at BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (plugin, key)
);

CREATE TABLE job_runs (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX job_runs_job ON job_runs (job_id, started_at);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Which of a plugin's own migrations (its migrations/ folder) ran on this database.
CREATE TABLE plugin_migrations (
    plugin TEXT NOT NULL,
    version TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (plugin, version)
);
