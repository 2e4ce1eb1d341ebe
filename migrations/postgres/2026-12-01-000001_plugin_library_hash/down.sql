ALTER TABLE plugin_state DROP COLUMN library_sha256;
