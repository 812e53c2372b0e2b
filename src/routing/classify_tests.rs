//! Tests of the classifier.
use super::*;

fn kind(sql: &str) -> StatementKind {
    Classifier::new().classify(sql)
}

fn assert_all(expected: StatementKind, sqls: &[&str]) {
    for sql in sqls {
        assert_eq!(kind(sql), expected, "{sql}");
    }
}

#[test]
fn diesel_rendered_postgres_select_is_read() {
    assert_all(
        StatementKind::Read,
        &[
            r#"SELECT "users"."id", "users"."name" FROM "users" WHERE ("users"."id" = $1) LIMIT $2"#,
            r#"SELECT COUNT(*) FROM "users" WHERE "users"."name" IN ($1, $2, $3)"#,
            r#"SELECT "users"."update", "users"."insert" FROM "users""#,
        ],
    );
}

#[test]
fn diesel_rendered_sqlite_select_with_question_mark_binds_is_read() {
    assert_all(
        StatementKind::Read,
        &[
            r#"SELECT `users`.`id` FROM `users` WHERE `users`.`id` = ? LIMIT ?"#,
            r#"SELECT "users"."id", "users"."name" FROM "users" WHERE ("users"."id" = ?) LIMIT ?"#,
        ],
    );
}

#[test]
fn insert_update_and_delete_with_returning_are_write() {
    assert_all(
        StatementKind::Write,
        &[
            r#"INSERT INTO "users" ("name") VALUES ($1) RETURNING "users"."id", "users"."name""#,
            r#"UPDATE "users" SET "name" = $1 WHERE ("users"."id" = $2) RETURNING "users"."id""#,
            r#"DELETE FROM "users" WHERE ("users"."id" = $1) RETURNING "users"."id""#,
            "insert into users (name) values (?)",
        ],
    );
}

#[test]
fn select_with_for_update_is_locking() {
    assert_eq!(
        kind(r#"SELECT "t"."id" FROM "t" WHERE "t"."id" = $1 FOR UPDATE"#),
        StatementKind::Locking
    );
}

#[test]
fn every_row_lock_strength_and_its_options_are_locking() {
    assert_all(
        StatementKind::Locking,
        &[
            "SELECT * FROM t FOR NO KEY UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM t FOR KEY SHARE",
            r#"SELECT * FROM "t" FOR UPDATE OF "t" NOWAIT"#,
            r#"SELECT * FROM "t" FOR NO KEY UPDATE OF "t" SKIP LOCKED"#,
            "select * from t for share skip locked",
            "SELECT * FROM t WHERE a = $1 FOR /* strength */ UPDATE",
            "SELECT * FROM t -- lock it\nFOR UPDATE",
        ],
    );
}

#[test]
fn mysql_lock_in_share_mode_is_locking() {
    assert_eq!(
        kind("SELECT * FROM `t` WHERE `id` = ? LOCK IN SHARE MODE"),
        StatementKind::Locking
    );
}

#[test]
fn sequence_and_session_function_calls_are_write_functions() {
    assert_all(
        StatementKind::WriteFunction,
        &[
            "SELECT nextval('s')",
            "select NEXTVAL($1)",
            "SELECT pg_catalog.nextval('s')",
            "SELECT pg_catalog . nextval /* spaced */ ('s')",
            r#"SELECT "nextval"('s')"#,
            r#"SELECT "pg_catalog"."nextval"('s')"#,
            "SELECT pg_advisory_lock(42)",
            "SELECT pg_try_advisory_xact_lock($1, $2)",
            "SELECT last_insert_rowid()",
            "SELECT GET_LOCK('x', 10)",
            "SELECT * FROM t WHERE id = (SELECT lastval())",
        ],
    );
}

#[test]
fn function_name_without_a_call_is_read() {
    assert_all(
        StatementKind::Read,
        &[
            "SELECT nextval_report FROM t",
            "SELECT nextval FROM t",
            "SELECT t.nextval, changes FROM t",
        ],
    );
}

#[test]
fn user_function_names_match_case_insensitively_in_any_schema() {
    let c = Classifier::with_write_functions([" Touch_Row "]);
    assert_eq!(
        c.classify("SELECT touch_row($1)"),
        StatementKind::WriteFunction
    );
    assert_eq!(
        c.classify("SELECT APP.TOUCH_ROW($1)"),
        StatementKind::WriteFunction
    );
    assert_eq!(c.classify("SELECT touch_row FROM t"), StatementKind::Read);
    assert_eq!(
        Classifier::new().classify("SELECT touch_row($1)"),
        StatementKind::Read
    );
}

#[test]
fn schema_qualified_user_function_matches_only_that_schema() {
    let c = Classifier::with_write_functions(vec![String::from("app.touch")]);
    assert_eq!(
        c.classify("SELECT app.touch(1)"),
        StatementKind::WriteFunction
    );
    assert_eq!(
        c.classify(r#"SELECT "App"."Touch"(1)"#),
        StatementKind::WriteFunction
    );
    assert_eq!(
        c.classify("SELECT db.app.touch(1)"),
        StatementKind::WriteFunction
    );
    assert_eq!(c.classify("SELECT other.touch(1)"), StatementKind::Read);
    assert_eq!(c.classify("SELECT touch(1)"), StatementKind::Read);
    assert_eq!(
        c.classify("SELECT nextval('s')"),
        StatementKind::WriteFunction
    );
}

#[test]
fn data_modifying_cte_is_write_and_plain_cte_is_read() {
    assert_all(
        StatementKind::Write,
        &[
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
            "with x as (update t set a = 1 returning *) select * from x",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
        ],
    );
    assert_all(
        StatementKind::Read,
        &[
            "WITH x AS (SELECT * FROM t) SELECT * FROM x",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
        ],
    );
}

#[test]
fn select_into_is_write() {
    assert_all(
        StatementKind::Write,
        &["SELECT * INTO new_t FROM t", "SELECT a INTO @v FROM t"],
    );
}

#[test]
fn write_words_win_over_locking_and_write_functions() {
    assert_eq!(
        kind("WITH d AS (DELETE FROM t RETURNING id) SELECT nextval('s') FROM d FOR UPDATE"),
        StatementKind::Write
    );
    assert_eq!(
        kind("SELECT nextval('s') FROM t FOR UPDATE"),
        StatementKind::Locking
    );
    assert_eq!(
        kind("SELECT * FROM t FOR UPDATE; SELECT nextval('s')"),
        StatementKind::Locking
    );
}

#[test]
fn keywords_inside_literals_comments_and_quoted_identifiers_do_not_count() {
    assert_all(
        StatementKind::Read,
        &[
            "SELECT 'update' FROM t",
            "SELECT 'it''s for update; insert into x' FROM t",
            "SELECT 'nextval(' FROM t",
            r#"SELECT "update", "for" "update", "insert" FROM t"#,
            r#"SELECT "a""b update" FROM t"#,
            "SELECT `delete` FROM `t`",
            "SELECT 1 -- for update\n",
            "SELECT 1 /* insert into t; nextval('s') */",
            "SELECT $$ delete from t $$",
            "SELECT $fn$ nextval('s') for update $fn$",
            "SELECT t.update, t.into FROM t",
        ],
    );
}

#[test]
fn escape_string_backslash_hides_the_quote() {
    assert_eq!(kind(r"SELECT E'it\'s update' FROM t"), StatementKind::Read);
    assert_eq!(
        kind(r"SELECT e'\\' FROM t FOR UPDATE"),
        StatementKind::Locking
    );
    // In a standard string a backslash is ordinary, so this one never ends.
    assert_eq!(
        kind(r"SELECT 'it\'s update' FROM t"),
        StatementKind::Unknown
    );
}

#[test]
fn unterminated_constructs_are_unknown() {
    assert_all(
        StatementKind::Unknown,
        &[
            "SELECT 'abc",
            "SELECT /* abc",
            "SELECT 1 /* outer /* inner */ still open",
            r#"SELECT "abc"#,
            "SELECT `abc",
            r"SELECT E'abc\'",
            "SELECT $tag$ body",
            "SELECT $a$ body $b$",
            "SELECT $$ body",
            "INSERT INTO t VALUES ('x)",
            "SELECT 1; SELECT 'x",
        ],
    );
}

#[test]
fn empty_and_comment_only_text_is_unknown() {
    assert_all(
        StatementKind::Unknown,
        &["", "   \n\t", "-- nothing", "/* nothing */", ";", " ; ;"],
    );
}

#[test]
fn leading_parentheses_are_skipped() {
    assert_all(
        StatementKind::Read,
        &["((SELECT 1))", "(SELECT 1) UNION (SELECT 2)"],
    );
    assert_eq!(kind("(SELECT 1) FOR UPDATE"), StatementKind::Locking);
    assert_eq!(kind("((INSERT INTO t VALUES (1)))"), StatementKind::Write);
}

#[test]
fn explain_classifies_the_explained_statement() {
    assert_all(
        StatementKind::Read,
        &[
            "EXPLAIN SELECT * FROM t",
            "EXPLAIN VERBOSE SELECT * FROM t",
            "EXPLAIN (FORMAT JSON, COSTS OFF) SELECT * FROM t",
            "EXPLAIN QUERY PLAN SELECT * FROM t",
        ],
    );
    assert_eq!(
        kind("EXPLAIN SELECT * FROM t FOR UPDATE"),
        StatementKind::Locking
    );
    assert_eq!(kind("EXPLAIN UPDATE t SET a = 1"), StatementKind::Write);
    assert_eq!(kind("EXPLAIN"), StatementKind::Write);
}

#[test]
fn explain_analyze_is_write() {
    assert_all(
        StatementKind::Write,
        &[
            "EXPLAIN ANALYZE SELECT * FROM t",
            "explain analyse select 1",
            "EXPLAIN (ANALYZE) SELECT * FROM t",
            "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t",
            "EXPLAIN (FORMAT JSON, ANALYZE TRUE) SELECT 1",
        ],
    );
}

#[test]
fn session_transaction_maintenance_and_ddl_statements_are_write() {
    assert_all(
        StatementKind::Write,
        &[
            "SET search_path TO app",
            "RESET ALL",
            "BEGIN",
            "COMMIT",
            "VACUUM t",
            "ANALYZE t",
            "CREATE TABLE t (id int)",
            "DROP TABLE t",
            "ALTER TABLE t ADD COLUMN c int",
            "TRUNCATE t",
            "GRANT SELECT ON t TO r",
            "CALL p($1)",
            "DO $$ BEGIN PERFORM 1; END $$",
            "COPY t FROM STDIN",
            "LOCK TABLE t",
            "REFRESH MATERIALIZED VIEW v",
            "NOTIFY ch",
            "LISTEN ch",
            "PRAGMA foreign_keys = ON",
            "REPLACE INTO t VALUES (?)",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            "? SELECT 1",
            r#""select" 1"#,
        ],
    );
}

#[test]
fn show_values_and_table_are_read() {
    assert_all(
        StatementKind::Read,
        &[
            "SHOW search_path",
            "VALUES (1),(2)",
            "TABLE users",
            "table \"users\"",
        ],
    );
}

#[test]
fn numbered_binds_are_not_dollar_quotes() {
    assert_eq!(
        kind("SELECT * FROM t WHERE a = $1 AND b = $2"),
        StatementKind::Read
    );
    assert_eq!(
        kind("SELECT * FROM t WHERE a = $1 FOR UPDATE"),
        StatementKind::Locking
    );
    assert_eq!(
        kind("SELECT $1, $10 FROM t WHERE nextval($2) > 0"),
        StatementKind::WriteFunction
    );
    assert_eq!(kind("SELECT $a$ $b$ update $b$ $a$"), StatementKind::Read);
    assert_eq!(
        kind("SELECT $_x1$ for update $_x1$ FROM t"),
        StatementKind::Read
    );
}

#[test]
fn nested_block_comments_must_all_close() {
    assert_eq!(
        kind("SELECT 1 /* outer /* inner */ still a comment: update */"),
        StatementKind::Read
    );
    assert_eq!(kind("/* a /* b */ */ SELECT 1"), StatementKind::Read);
    assert_eq!(kind("/* a /* b */ */ DELETE FROM t"), StatementKind::Write);
}

#[test]
fn mysql_executable_comments_are_lexed_as_sql() {
    let mysql = Classifier::new().mysql_dialect(true);
    assert_eq!(
        mysql.classify("SELECT * FROM t /*!50000 FOR UPDATE */"),
        StatementKind::Locking
    );
    assert_eq!(
        kind("SELECT * FROM t /*!50000 FOR UPDATE */"),
        StatementKind::Read,
        "PostgreSQL and SQLite do not run it"
    );
    assert_eq!(
        kind("SELECT * FROM t /* FOR UPDATE */"),
        StatementKind::Read
    );
}

#[test]
fn several_statements_take_the_strongest_kind() {
    assert_eq!(kind("SELECT 1; SELECT 2;"), StatementKind::Read);
    assert_eq!(kind("SELECT 1; DELETE FROM t"), StatementKind::Write);
    assert_eq!(kind("SELECT 1; SET x = 1"), StatementKind::Write);
    assert_eq!(kind(";; SELECT 1 ;"), StatementKind::Read);
}

#[test]
fn display_prints_the_short_name_and_only_read_is_read() {
    let all = [
        (StatementKind::Read, "read"),
        (StatementKind::Write, "write"),
        (StatementKind::Locking, "locking"),
        (StatementKind::WriteFunction, "write_function"),
        (StatementKind::Unknown, "unknown"),
    ];
    for (kind, name) in all {
        assert_eq!(kind.as_str(), name);
        assert_eq!(kind.to_string(), name);
        assert_eq!(kind.is_read(), kind == StatementKind::Read);
    }
}

#[test]
fn builtin_function_names_are_lowercase_words() {
    for name in BUILTIN_WRITE_FUNCTIONS {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
        assert_eq!(
            kind(&format!("SELECT {}(1)", name.to_uppercase())),
            StatementKind::WriteFunction
        );
    }
}

#[test]
fn postgres_comments_are_comments_even_when_they_look_like_mysql_ones() {
    // MySQL's `/*!` rule would hide the call inside a string literal
    assert_eq!(
        kind("SELECT /*! ' */ pg_try_advisory_lock(7) --'"),
        StatementKind::WriteFunction
    );
    assert_eq!(
        kind("SELECT /*! ' */ nextval('s') --'"),
        StatementKind::WriteFunction
    );
}

#[test]
fn unicode_escaped_names_go_to_the_primary() {
    for sql in [
        r#"SELECT U&"pg_try_advisory_loc\006B"(7)"#,
        r#"SELECT u&"nextva\006C"('s')"#,
        r#"SELECT * FROM U&"t\0061ble""#,
    ] {
        assert!(!kind(sql).is_read(), "{sql}");
    }
}

#[test]
fn a_configured_function_in_attribute_notation_is_a_call() {
    let c = Classifier::with_write_functions(["touch_item"]);
    assert_eq!(
        c.classify("SELECT i.touch_item FROM items i"),
        StatementKind::WriteFunction
    );
    assert_eq!(
        c.classify(r#"SELECT "i"."touch_item" FROM "items" "i""#),
        StatementKind::WriteFunction
    );
    assert_eq!(
        c.classify("SELECT i.touch_item_count FROM items i"),
        StatementKind::Read
    );
    // built-in write functions take no row, so `t.nextval` is a column
    assert_eq!(kind("SELECT t.nextval FROM t"), StatementKind::Read);
}

#[test]
fn explain_without_analyze_is_a_read_also_with_analyze_false() {
    assert_eq!(
        kind("EXPLAIN (COSTS OFF) SELECT * FROM t"),
        StatementKind::Read
    );
    assert_eq!(
        kind("EXPLAIN (ANALYZE FALSE) SELECT * FROM t"),
        StatementKind::Read
    );
    assert_eq!(
        kind("EXPLAIN (ANALYZE off, COSTS OFF) SELECT * FROM t"),
        StatementKind::Read
    );
    assert_eq!(
        kind("EXPLAIN (ANALYZE TRUE) SELECT * FROM t"),
        StatementKind::Write
    );
}

fn infos(sql: &str) -> Vec<StatementInfo> {
    let mut out = Vec::new();
    Classifier::new().analyze(sql, |i| out.push(i));
    out
}

#[test]
fn transaction_control_is_recognised_in_every_spelling() {
    for (sql, tx) in [
        ("BEGIN", TxControl::Begin),
        ("/* app */ BEGIN", TxControl::Begin),
        ("-- app\nbegin work", TxControl::Begin),
        ("BEGIN IMMEDIATE", TxControl::Begin),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            TxControl::Begin,
        ),
        ("COMMIT", TxControl::Commit),
        ("end transaction", TxControl::Commit),
        ("COMMIT AND CHAIN", TxControl::CommitAndChain),
        ("COMMIT AND NO CHAIN", TxControl::Commit),
        ("ROLLBACK", TxControl::Rollback),
        ("ABORT", TxControl::Rollback),
        ("ROLLBACK TO SAVEPOINT s", TxControl::Savepoint),
        ("ROLLBACK TRANSACTION TO s", TxControl::Savepoint),
        ("SAVEPOINT s", TxControl::Savepoint),
        ("RELEASE SAVEPOINT s", TxControl::Savepoint),
        ("PREPARE TRANSACTION 'x'", TxControl::Rollback),
        ("BEGIN READ ONLY", TxControl::BeginReadOnly),
        ("BEGIN TRANSACTION READ ONLY", TxControl::BeginReadOnly),
        (
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            TxControl::BeginReadOnly,
        ),
        (
            "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
            TxControl::Begin,
        ),
        ("BEGIN READ ONLY READ WRITE", TxControl::Begin),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", TxControl::Begin),
    ] {
        let found = infos(sql);
        assert_eq!(found.len(), 1, "{sql}");
        assert_eq!(found[0].tx, Some(tx), "{sql}");
        assert!(!found[0].writes, "{sql}");
    }
    let batch = infos("BEGIN; INSERT INTO t VALUES (1); COMMIT;");
    let tx: Vec<_> = batch.iter().map(|i| i.tx).collect();
    assert_eq!(tx, [Some(TxControl::Begin), None, Some(TxControl::Commit)]);
    assert!(batch[1].writes);
    assert!(infos("COMMIT PREPARED 'x'")[0].writes);
    assert_eq!(infos("START REPLICA")[0].tx, None);
}

#[test]
fn session_state_is_recognised() {
    use SessionChange as S;
    for (sql, change) in [
        ("SET search_path TO app, public", S::Settings),
        ("set time zone 'Asia/Tokyo'", S::Settings),
        ("SET SESSION statement_timeout = 5", S::Settings),
        ("SET ROLE limited", S::Other),
        ("SET SESSION AUTHORIZATION limited", S::Other),
        ("SET LOCAL search_path TO app", S::None),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", S::None),
        ("SET CONSTRAINTS ALL DEFERRED", S::None),
        ("RESET search_path", S::Settings),
        ("RESET ALL", S::ResetAll),
        ("DISCARD ALL", S::DiscardAll),
        ("DISCARD TEMP", S::Other),
        ("CREATE TEMP TABLE t (id int)", S::Other),
        ("CREATE TEMPORARY VIEW v AS SELECT 1", S::Other),
        ("CREATE GLOBAL TEMPORARY TABLE t (id int)", S::Other),
        ("CREATE TABLE pg_temp.t (id int)", S::Other),
        ("CREATE TABLE t (temp int)", S::None),
        ("CREATE TABLE t AS SELECT 1 AS temp", S::None),
        ("SELECT * INTO TEMP t FROM u", S::Other),
        ("PREPARE p AS SELECT 1", S::Held),
        ("DEALLOCATE p", S::Held),
        ("LISTEN ch", S::Held),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", S::Held),
        (
            "SELECT set_config('application_name', 'x', false)",
            S::Settings,
        ),
        ("SELECT pg_advisory_lock(1)", S::Held),
        ("SELECT pg_advisory_xact_lock(1)", S::None),
        ("PRAGMA foreign_keys = ON", S::Other),
        ("PRAGMA foreign_keys", S::None),
        ("ATTACH DATABASE 'x.db' AS x", S::Other),
        ("SELECT 1", S::None),
        ("INSERT INTO t VALUES (1)", S::None),
    ] {
        let found = infos(sql);
        assert_eq!(found.len(), 1, "{sql}");
        assert_eq!(found[0].session, change, "{sql}");
    }
    assert!(!infos("SET x = 1")[0].writes);
    assert!(infos("CREATE TABLE t (id int)")[0].writes);
    assert_eq!(infos("SELECT 'unterminated"), [StatementInfo::UNKNOWN]);
}

#[test]
fn unknown_functions_go_to_the_primary_only_when_asked() {
    let strict = Classifier::new().unknown_functions_to_primary(true);
    let read_ok = strict.clone().with_read_functions(["app.score"]);
    for sql in [
        "SELECT app_lock(1)",
        "SELECT * FROM t WHERE app_lock(t.id)",
        "SELECT x FROM my_set_returning(1) AS x",
        "SELECT app.score(t) FROM t",
    ] {
        assert_eq!(strict.classify(sql), StatementKind::WriteFunction, "{sql}");
        assert_eq!(kind(sql), StatementKind::Read, "default: {sql}");
    }
    assert_eq!(
        read_ok.classify("SELECT app.score(t) FROM t"),
        StatementKind::Read
    );
    // what Diesel and hand-written reads use every day stays a read
    for sql in [
        r#"SELECT COUNT(*) FROM "users" WHERE "users"."name" = ANY($1)"#,
        r#"SELECT lower("users"."name"), coalesce("users"."x", $1) FROM "users" WHERE "users"."id" IN ($2, $3)"#,
        "SELECT CAST(x AS varchar(10)), x::numeric(10, 2) FROM t",
        "SELECT * FROM t AS a(x, y) JOIN u b(z) ON a.x = b.z",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r",
        "SELECT EXISTS (SELECT 1 FROM t) AND NOT (x IN (1, 2))",
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
        "SELECT count(*) FILTER (WHERE a) FROM t",
        "SELECT date_trunc('day', now()), json_build_object('a', 1)",
        "SELECT * FROM generate_series(1, 3)",
    ] {
        assert_eq!(strict.classify(sql), StatementKind::Read, "{sql}");
    }
}

#[test]
fn odd_inputs_never_panic() {
    let odd = [
        "$",
        "$$",
        "$a",
        "$a$",
        "$1",
        "E'",
        "e",
        "\"",
        "`",
        "'",
        "/*",
        "/*!",
        "*/",
        "--",
        "-",
        "(",
        "((((",
        ")",
        "?",
        ".",
        "..(",
        "a.b.c.d.e.f(",
        "é",
        "SELECT 'é",
        "SELECT \"ünïcødé\"(1)",
        "SÉLECT 1",
        "SELECT ünï",
        "SELECT E'\\",
        "SELECT E'\\é'",
        "SELECT $é$ x $é$",
        "EXPLAIN (",
        "EXPLAIN ((",
        "FOR",
        "SELECT FOR",
        "SELECT LOCK IN",
        "SELECT 1e",
        "\u{feff}SELECT 1",
        "\0",
        "SELECT\u{a0}1",
    ];
    let c = Classifier::with_write_functions(["", ".", "a..b", "x."]);
    for sql in odd {
        let _ = c.classify(sql);
        // Every prefix, cut at a char boundary, must be fine too.
        for (i, _) in sql.char_indices() {
            let _ = c.classify(&sql[..i]);
        }
    }
    assert_eq!(
        kind("SELECT a.b.c.d.e.nextval(1)"),
        StatementKind::WriteFunction
    );
    assert_eq!(kind("SELECT ünï FROM t"), StatementKind::Read);
}

/// What MySQL's reading of `sql` gives, statement by statement: (kind, writes, tx, session).
fn mysql(sql: &str) -> Vec<(StatementKind, bool, Option<TxControl>, SessionChange)> {
    let mut out = Vec::new();
    Classifier::new()
        .mysql_dialect(true)
        .analyze(sql, |i| out.push((i.kind, i.writes, i.tx, i.session)));
    out
}

#[test]
fn mysql_comments_strings_and_executable_comments_are_read_as_mysql_does() {
    use SessionChange as S;
    use StatementKind as K;
    let read = (K::Read, false, None, S::None);
    let write = (K::Write, true, None, S::None);
    for (sql, expected) in [
        (
            r#"SELECT `id` FROM `users` WHERE `users`.`id` = ?"#,
            vec![read],
        ),
        ("# a comment\nDELETE FROM t", vec![write]),
        ("SELECT 1 # DELETE FROM t", vec![read]),
        ("SELECT 1 -- DELETE FROM t", vec![read]),
        // `--1` is not a comment in MySQL: `1 - -1`, then a second statement
        ("SELECT 1 --1; DELETE FROM t", vec![read, write]),
        // backslash escapes: the DELETE is code, not inside a string
        (
            r#"SELECT 'a\''; DELETE FROM t; SELECT ''''"#,
            vec![read, write, read],
        ),
        (r#"SELECT "a\""; DELETE FROM t"#, vec![read, write]),
        (r#"SELECT 'a\\'; DELETE FROM t"#, vec![read, write]),
        // executable comments run: their content is classified
        (
            "/*!40101 SET NAMES utf8 */",
            vec![(K::Write, false, None, S::Settings)],
        ),
        ("SELECT 1 /*!50000 ; DELETE FROM t */", vec![read, write]),
        ("SELECT 1 /*M!100100 ; DELETE FROM t */", vec![read, write]),
        ("SELECT 1 /* ; DELETE FROM t */", vec![read]),
    ] {
        assert_eq!(mysql(sql), expected, "{sql}");
    }
}

#[test]
fn mysql_statements_that_write_lock_or_keep_session_state() {
    use SessionChange as S;
    use StatementKind as K;
    let write = (K::Write, true, None, S::None);
    for (sql, expected) in [
        (
            "SELECT * FROM t LOCK IN SHARE MODE",
            (K::Locking, false, None, S::None),
        ),
        (
            "SELECT * FROM t FOR SHARE",
            (K::Locking, false, None, S::None),
        ),
        ("SELECT id INTO @x FROM t", (K::Write, true, None, S::Other)),
        ("SELECT id FROM t INTO @x", (K::Write, true, None, S::Other)),
        ("SELECT @x := 5", (K::WriteFunction, false, None, S::Other)),
        ("SELECT id FROM t INTO OUTFILE '/tmp/x'", write),
        ("SELECT id FROM t INTO DUMPFILE '/tmp/x'", write),
        (
            "SELECT GET_LOCK('a', 1)",
            (K::WriteFunction, false, None, S::Held),
        ),
        (
            "SELECT RELEASE_LOCK('a')",
            (K::WriteFunction, false, None, S::None),
        ),
        (
            "SELECT IS_FREE_LOCK('a')",
            (K::WriteFunction, false, None, S::None),
        ),
        (
            "SELECT LAST_INSERT_ID()",
            (K::WriteFunction, false, None, S::None),
        ),
        ("REPLACE INTO t VALUES (1)", write),
        (
            "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE v = 2",
            write,
        ),
        ("CALL p()", write),
        ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", write),
        ("LOAD XML INFILE '/tmp/x' INTO TABLE t", write),
        ("HANDLER t OPEN", (K::Write, false, None, S::Held)),
        ("SET NAMES utf8mb4", (K::Write, false, None, S::Settings)),
        ("SET @x = 1", (K::Write, false, None, S::Settings)),
        (
            "SET autocommit = 0",
            (K::Write, false, Some(TxControl::AutocommitOff), S::Other),
        ),
        (
            "SET @@session.autocommit = OFF",
            (K::Write, false, Some(TxControl::AutocommitOff), S::Other),
        ),
        (
            "SET autocommit = @x",
            (K::Write, false, Some(TxControl::AutocommitOff), S::Other),
        ),
        (
            "SET autocommit = 1",
            (K::Write, false, Some(TxControl::AutocommitOn), S::Other),
        ),
        (
            "SET SESSION autocommit = ON",
            (K::Write, false, Some(TxControl::AutocommitOn), S::Other),
        ),
        (
            "CREATE TEMPORARY TABLE tt (id INT)",
            (K::Write, false, None, S::Other),
        ),
        ("LOCK TABLES t WRITE", (K::Write, true, None, S::Other)),
        ("UNLOCK TABLES", (K::Write, false, None, S::None)),
        (
            "START TRANSACTION READ ONLY",
            (K::Write, false, Some(TxControl::BeginReadOnly), S::None),
        ),
        (
            "BEGIN WORK",
            (K::Write, false, Some(TxControl::Begin), S::None),
        ),
        (
            "COMMIT WORK",
            (K::Write, false, Some(TxControl::Commit), S::None),
        ),
        (
            "XA START 'x'",
            (K::Write, false, Some(TxControl::Begin), S::None),
        ),
        (
            "XA END 'x'",
            (K::Write, false, Some(TxControl::Savepoint), S::None),
        ),
        (
            "XA PREPARE 'x'",
            (K::Write, false, Some(TxControl::Savepoint), S::None),
        ),
        (
            "XA COMMIT 'x'",
            (K::Write, false, Some(TxControl::Commit), S::None),
        ),
        (
            "XA ROLLBACK 'x'",
            (K::Write, false, Some(TxControl::Rollback), S::None),
        ),
        (
            "DO RELEASE_LOCK('a')",
            (K::WriteFunction, false, None, S::None),
        ),
        (
            "DO GET_LOCK('a', 0)",
            (K::WriteFunction, false, None, S::Held),
        ),
        ("DO @x := 5", (K::WriteFunction, false, None, S::Other)),
        ("DO SLEEP(0)", (K::Read, false, None, S::None)),
    ] {
        assert_eq!(mysql(sql), vec![expected], "{sql}");
    }
}

#[test]
fn postgres_and_sqlite_keep_their_own_reading_of_the_same_text() {
    // `#` is not a comment, `--` always is, backslashes do not escape
    assert_eq!(kind("SELECT 1 # DELETE FROM t"), StatementKind::Write);
    assert_eq!(kind("SELECT 1 --1; DELETE FROM t"), StatementKind::Read);
    let mut sessions = Vec::new();
    Classifier::new().analyze("LOAD 'auto_explain'", |i| sessions.push(i.session));
    assert_eq!(
        sessions,
        vec![SessionChange::Other],
        "PostgreSQL's LOAD loads a library"
    );
}
