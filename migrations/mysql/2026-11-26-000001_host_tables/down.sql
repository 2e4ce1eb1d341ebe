DROP TABLE plugin_migrations;
DROP TABLE audit_log;
DROP TABLE job_runs;
DROP TABLE plugin_kv;
DROP TABLE plugin_state;
