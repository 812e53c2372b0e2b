//! What the classifier knows about functions: which ones must run on the primary, which of
//! those change no data or leave state in the session, and (for
//! `unknown_functions = "primary"`) which built-in ones only read.

/// Built-in write/session function names (lowercase) that force the primary.
///
/// They match a call with any schema qualifier (`pg_catalog.nextval(...)`).
#[rustfmt::skip]
pub(crate) const BUILTIN_WRITE_FUNCTIONS: &[&str] = &[
    // PostgreSQL: sequences.
    "nextval", "setval", "currval", "lastval",
    // this crate's own id function (`cluster.install_id_function`)
    "next_sharded_id",
    // PostgreSQL: advisory locks.
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "pg_advisory_unlock",
    "pg_advisory_unlock_shared", "pg_advisory_unlock_all",
    // PostgreSQL: transactions, notifications, settings.
    "txid_current", "pg_current_xact_id", "pg_notify", "set_config",
    // PostgreSQL: large objects.
    "lo_create", "lo_creat", "lo_import", "lo_export", "lo_unlink", "lo_from_bytea", "lo_put",
    "lo_truncate", "lowrite",
    // PostgreSQL: WAL, replication and server administration.
    "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
    "pg_switch_wal", "pg_create_restore_point", "pg_logical_emit_message",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_drop_replication_slot", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_statements_reset",
    // SQLite.
    "last_insert_rowid", "changes", "total_changes",
    // MySQL / MariaDB.
    "get_lock", "release_lock", "release_all_locks", "is_used_lock", "is_free_lock",
    "last_insert_id", "found_rows", "row_count", "master_pos_wait", "master_gtid_wait",
    "source_pos_wait", "wait_for_executed_gtid_set",
];

/// Write functions that must run on the primary but change no data: locks, settings,
/// positions, values of the session.
pub(super) const NO_DATA_FUNCTIONS: &[&str] = &[
    "set_config",
    "currval",
    "lastval",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "last_insert_rowid",
    "changes",
    "total_changes",
    "get_lock",
    "release_lock",
    "release_all_locks",
    "is_used_lock",
    "is_free_lock",
    "last_insert_id",
    "found_rows",
    "row_count",
    "master_pos_wait",
    "master_gtid_wait",
    "source_pos_wait",
    "wait_for_executed_gtid_set",
];

/// Write functions whose effect outlives the transaction in the session.
pub(super) const SESSION_FUNCTIONS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "get_lock",
    "lo_open",
    "dblink_connect",
    "dblink_connect_u",
    "load_extension",
];

/// Words that a `(` may follow without a function call: keywords, type names with a length
/// or precision (`varchar(10)`), and function-like syntax that only reads.
pub(super) const NOT_CALLS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "case",
    "cast",
    "char",
    "character",
    "coalesce",
    "cube",
    "decimal",
    "distinct",
    "else",
    "except",
    "exists",
    "extract",
    "filter",
    "float",
    "from",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "intersect",
    "interval",
    "is",
    "join",
    "lateral",
    "least",
    "like",
    "limit",
    "not",
    "nullif",
    "numeric",
    "offset",
    "on",
    "or",
    "order",
    "over",
    "overlay",
    "partition",
    "position",
    "recursive",
    "rollup",
    "row",
    "select",
    "sets",
    "similar",
    "some",
    "substring",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "treat",
    "trim",
    "union",
    "using",
    "values",
    "varbit",
    "varchar",
    "varying",
    "when",
    "where",
    "window",
    "with",
    "within",
    "bit",
];

/// Keywords after which a name starts an expression (so `name(` there is a call); after any
/// other word a name is an alias (`FROM t a(x, y)`).
pub(super) const CALL_CONTEXT: &[&str] = &[
    "select",
    "from",
    "join",
    "where",
    "and",
    "or",
    "not",
    "then",
    "else",
    "when",
    "on",
    "by",
    "returning",
    "distinct",
    "lateral",
    "case",
    "having",
    "set",
    "values",
    "is",
    "like",
    "ilike",
    "between",
    "in",
    "all",
    "any",
    "some",
    "exists",
    "using",
    "limit",
    "offset",
    "return",
    "into",
    "table",
    "only",
    "over",
    "filter",
    "within",
];

/// Built-in functions that only read: with `unknown_functions = "primary"`, a call of any
/// other function (not named in `read_functions`) goes to the primary.
#[rustfmt::skip]
pub(super) const KNOWN_READ_FUNCTIONS: &[&str] = &[
    // aggregates and window functions
    "count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg",
    "json_object_agg", "jsonb_object_agg", "bool_and", "bool_or", "every", "bit_and", "bit_or",
    "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "corr",
    "covar_pop", "covar_samp", "percentile_cont", "percentile_disc", "mode", "rank",
    "dense_rank", "row_number", "ntile", "lag", "lead", "first_value", "last_value",
    "nth_value", "cume_dist", "percent_rank", "group_concat", "total",
    // numbers
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "cbrt", "exp", "ln", "log",
    "log10", "power", "pow", "mod", "sign", "random", "pi", "degrees", "radians", "sin", "cos",
    "tan", "asin", "acos", "atan", "atan2", "div", "gcd", "lcm", "width_bucket", "scale",
    // text
    "length", "char_length", "character_length", "octet_length", "bit_length", "lower",
    "upper", "initcap", "concat", "concat_ws", "substr", "left", "right", "lpad", "rpad",
    "ltrim", "rtrim", "btrim", "replace", "reverse", "repeat", "split_part", "strpos",
    "translate", "format", "to_char", "to_number", "to_date", "to_timestamp", "md5", "sha224",
    "sha256", "sha384", "sha512", "encode", "decode", "quote_ident", "quote_literal",
    "quote_nullable", "regexp_replace", "regexp_match", "regexp_matches", "regexp_like",
    "regexp_count", "regexp_substr", "regexp_instr", "regexp_split_to_array",
    "regexp_split_to_table", "starts_with", "ascii", "chr", "instr", "printf", "hex", "unhex",
    "glob", "soundex", "unicode", "char", "normalize", "unistr", "string_to_array",
    "array_to_string", "to_hex", "convert_from", "convert_to",
    // nulls and conditionals
    "ifnull", "iif", "num_nulls", "num_nonnulls",
    // date and time
    "now", "date_trunc", "date_part", "age", "make_date", "make_time", "make_timestamp",
    "make_timestamptz", "make_interval", "clock_timestamp", "statement_timestamp",
    "transaction_timestamp", "timeofday", "date", "datetime", "julianday", "strftime",
    "unixepoch", "timezone", "isfinite", "justify_days", "justify_hours", "justify_interval",
    "date_bin", "date_add", "date_subtract",
    // json
    "json_build_object", "jsonb_build_object", "json_build_array", "jsonb_build_array",
    "to_json", "to_jsonb", "json_extract", "jsonb_extract_path", "jsonb_extract_path_text",
    "json_extract_path", "json_extract_path_text", "jsonb_array_length", "json_array_length",
    "jsonb_typeof", "json_typeof", "jsonb_set", "jsonb_set_lax", "jsonb_insert",
    "jsonb_strip_nulls", "json_strip_nulls", "jsonb_pretty", "row_to_json", "array_to_json",
    "json_array", "json_object", "json_each", "jsonb_each", "json_each_text",
    "jsonb_each_text", "json_array_elements", "jsonb_array_elements",
    "json_array_elements_text", "jsonb_array_elements_text", "jsonb_path_query",
    "jsonb_path_query_array", "jsonb_path_query_first", "jsonb_path_exists",
    "jsonb_path_match", "jsonb_object_keys", "json_object_keys", "json_populate_record",
    "jsonb_populate_record", "json_to_record", "jsonb_to_record", "json_valid",
    "json_quote", "json_type", "json_group_array", "json_group_object", "json_set",
    "json_insert", "json_replace", "json_remove", "json_patch",
    // arrays and sets
    "array_length", "array_lower", "array_upper", "array_position", "array_positions",
    "array_append", "array_prepend", "array_cat", "array_remove", "array_replace", "unnest",
    "cardinality", "array_dims", "array_ndims", "generate_series", "generate_subscripts",
    // text search
    "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
    "websearch_to_tsquery", "ts_rank", "ts_rank_cd", "ts_headline", "setweight",
    "ts_rewrite", "numnode", "querytree", "strip",
    // ranges
    "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange", "isempty",
    "lower_inc", "upper_inc", "lower_inf", "upper_inf", "range_merge", "multirange",
    // uuids and misc
    "gen_random_uuid", "uuid_generate_v4", "current_setting", "current_database",
    "current_schema", "current_schemas", "current_user", "session_user", "version",
    "pg_typeof", "format_type", "has_table_privilege", "has_column_privilege",
    "has_schema_privilege", "pg_table_size", "pg_relation_size", "pg_total_relation_size",
    "pg_size_pretty", "pg_is_in_recovery", "pg_last_wal_replay_lsn", "pg_backend_pid",
    "pg_postmaster_start_time", "pg_last_xact_replay_timestamp", "inet_client_addr",
    "host", "family", "masklen", "netmask", "network", "abbrev", "broadcast", "typeof",
    "quote", "zeroblob", "randomblob", "likelihood", "likely", "unlikely", "sqlite_version",
    "bool", "int4", "int8", "text", "float8", "numeric_le",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_lowercase_words() {
        for list in [NOT_CALLS, CALL_CONTEXT, KNOWN_READ_FUNCTIONS] {
            for name in list {
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
            }
        }
    }
}
