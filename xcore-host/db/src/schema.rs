//! diesel's view of the host's tables (`migrations/`). Times are Unix milliseconds.

diesel::table! {
    plugin_state (name) {
        name -> Text,
        enabled -> Bool,
        version -> Text,
        mode -> Text,
        source -> Nullable<Text>,
        signed_by -> Nullable<Text>,
        installed_at -> BigInt,
        updated_at -> BigInt,
        library_sha256 -> Nullable<Text>,
    }
}

diesel::table! {
    plugin_kv (plugin, key) {
        plugin -> Text,
        key -> Text,
        value -> Text,
        expires_at -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    job_runs (id) {
        id -> BigInt,
        job_id -> Text,
        started_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        outcome -> Text,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        at -> BigInt,
        actor -> Text,
        action -> Text,
        target -> Text,
        outcome -> Text,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    plugin_migrations (plugin, version) {
        plugin -> Text,
        version -> Text,
        applied_at -> BigInt,
    }
}
