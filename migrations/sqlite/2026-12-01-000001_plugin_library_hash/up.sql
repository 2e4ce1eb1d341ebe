-- The SHA-256 of the library this host built for the plugin from verified sources
-- (xcore plugin add); its build record (build.sig) carries the same hash, signed.
ALTER TABLE plugin_state ADD COLUMN library_sha256 TEXT;
