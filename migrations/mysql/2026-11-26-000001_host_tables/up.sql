-- The host's own tables (MySQL / MariaDB dialect). Keys are VARCHAR: MySQL cannot
-- index a TEXT column without a prefix length. Tables are utf8mb4_bin: the default
-- collation ignores case, which would make the keys "A" and "a" one row. Key-value keys
-- are VARBINARY: utf8mb4_bin still ignores trailing spaces ("a" = "a "), bytes do not.
-- Every time is Unix milliseconds (BIGINT): one representation on the three back-ends,
-- written by the host, never by a database default.
CREATE TABLE plugin_state (
    name VARCHAR(128) PRIMARY KEY NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    version VARCHAR(64) NOT NULL,
    mode VARCHAR(16) NOT NULL,
    source TEXT,
    signed_by VARCHAR(128),
    installed_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE plugin_kv (
    plugin VARCHAR(128) NOT NULL,
    `key` VARBINARY(512) NOT NULL,
    value LONGTEXT NOT NULL,
    expires_at BIGINT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (plugin, `key`)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE job_runs (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    job_id VARCHAR(128) NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NULL,
    outcome VARCHAR(32) NOT NULL,
    error TEXT
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE INDEX job_runs_job ON job_runs (job_id, started_at);

CREATE TABLE audit_log (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor VARCHAR(128) NOT NULL,
    action VARCHAR(64) NOT NULL,
    target VARCHAR(256) NOT NULL,
    outcome VARCHAR(32) NOT NULL,
    detail TEXT
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE INDEX audit_log_at ON audit_log (at);

-- Which of a plugin's own migrations (its migrations/ folder) ran on this database.
CREATE TABLE plugin_migrations (
    plugin VARCHAR(128) NOT NULL,
    version VARCHAR(128) NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (plugin, version)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
