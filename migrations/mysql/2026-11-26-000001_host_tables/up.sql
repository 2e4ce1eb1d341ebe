-- The host's own tables (MySQL / MariaDB dialect). Keys are VARCHAR: MySQL cannot
-- index a TEXT column without a prefix length.
CREATE TABLE plugin_state (
    name VARCHAR(128) PRIMARY KEY NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    version VARCHAR(64) NOT NULL,
    mode VARCHAR(16) NOT NULL,
    source TEXT,
    signed_by VARCHAR(128),
    installed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);

CREATE TABLE plugin_kv (
    plugin VARCHAR(128) NOT NULL,
    `key` VARCHAR(512) NOT NULL,
    value LONGTEXT NOT NULL,
    expires_at TIMESTAMP(6) NULL,
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (plugin, `key`)
);

CREATE TABLE job_runs (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    job_id VARCHAR(128) NOT NULL,
    started_at TIMESTAMP(6) NOT NULL,
    finished_at TIMESTAMP(6) NULL,
    outcome VARCHAR(32) NOT NULL,
    error TEXT
);
CREATE INDEX job_runs_job ON job_runs (job_id, started_at);

CREATE TABLE audit_log (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    actor VARCHAR(128) NOT NULL,
    action VARCHAR(64) NOT NULL,
    target VARCHAR(256) NOT NULL,
    outcome VARCHAR(32) NOT NULL,
    detail TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
