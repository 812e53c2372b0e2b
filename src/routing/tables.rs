//! Which tables a statement reads and writes, for replication positions per table.
//!
//! A position per database sends every read of a thread to the primary while any of its
//! writes is younger than the replication lag; a position per table keeps reads of tables the
//! thread did not write on the replicas. Diesel quotes every table name after `FROM`, `JOIN`,
//! `INTO`, `UPDATE` and `DELETE FROM`, so the names are easy to find. Whenever the answer is
//! not certain (DDL, comma-separated `FROM` lists, unterminated text) this says `None`, and
//! the caller falls back to the whole database.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use super::lexer::{Lexer, Token};

/// Interned table names (ids start at 1; 0 means "the whole database").
pub(crate) type TableId = u32;

/// The tables one statement reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableUse {
    pub(crate) read: Vec<TableId>,
    pub(crate) written: Vec<TableId>,
}

/// Table names and their ids, both ways.
#[derive(Default)]
struct Names {
    ids: HashMap<Box<str>, TableId>,
    /// `names[id - 1]` is the name of `id`.
    names: Vec<Box<str>>,
}

/// The process-wide table name interner.
fn interner() -> &'static RwLock<Names> {
    static NAMES: OnceLock<RwLock<Names>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// The id of a table name (`users`, case as PostgreSQL folds it).
pub(crate) fn intern(name: &str) -> Option<TableId> {
    if let Ok(names) = interner().read() {
        if let Some(id) = names.ids.get(name) {
            return Some(*id);
        }
    }
    let mut names = interner().write().ok()?;
    if let Some(id) = names.ids.get(name) {
        return Some(*id);
    }
    if names.names.len() >= 100_000 {
        return None; // a bound against generated names; the caller goes coarse
    }
    names.names.push(name.into());
    let id = names.names.len() as TableId;
    names.ids.insert(name.into(), id);
    Some(id)
}

/// The id of a table name the process already knows, without learning a new one (for
/// names from untrusted input such as tokens).
pub(crate) fn lookup(name: &str) -> Option<TableId> {
    interner().read().ok()?.ids.get(name).copied()
}

/// How many table names the process knows.
#[cfg(all(test, feature = "sqlite"))]
pub(crate) fn interned_count() -> usize {
    interner().read().map(|n| n.names.len()).unwrap_or(0)
}

/// The name of an interned table id.
pub(crate) fn table_name(id: TableId) -> Option<String> {
    let names = interner().read().ok()?;
    names
        .names
        .get((id as usize).checked_sub(1)?)
        .map(|n| n.to_string())
}

/// Words after which a name is not an alias.
const CLAUSE_WORDS: &[&str] = &[
    "WHERE",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "CROSS",
    "NATURAL",
    "ON",
    "USING",
    "GROUP",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "HAVING",
    "WINDOW",
    "FOR",
    "RETURNING",
    "SET",
    "VALUES",
    "SELECT",
    "DEFAULT",
    "OUTER",
    "LATERAL",
    "TABLESAMPLE",
    "WITH",
    "AS",
    "DO",
    "OVERRIDING",
    "ONLY",
];

/// Words that end a `FROM` list at their depth.
const FROM_ENDS: &[&str] = &[
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "WINDOW",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "RETURNING",
    "FOR",
    "SELECT",
];

/// Statement heads whose tables this module can tell.
const KNOWN_HEADS: &[&str] = &[
    "SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE",
];

fn is(word: &str, list: &[&str]) -> bool {
    list.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// A significant token, flattened for the scanner.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Punct(u8),
    Other,
}

/// The tables `sql` reads and writes, or `None` when unsure.
pub(crate) fn tables(sql: &str) -> Option<TableUse> {
    let mut lx = Lexer::new(sql, false);
    let mut toks = Vec::new();
    while let Some(t) = lx.next_token().ok()? {
        toks.push(match t {
            Token::Word(w) => Tok::Word(w),
            Token::Quoted(q) => Tok::Quoted(q),
            Token::Punct(p) => Tok::Punct(p),
            Token::Other => Tok::Other,
            // its name is not its text: unsure
            Token::UnicodeQuoted => return None,
        });
    }
    let head = toks.iter().find_map(|t| match t {
        Tok::Word(w) => Some(*w),
        Tok::Punct(b'(') => None,
        _ => Some(""),
    })?;
    if !is(head, KNOWN_HEADS) || toks.contains(&Tok::Punct(b';')) {
        return None;
    }
    let mut use_ = TableUse::default();
    let mut i = 0;
    // Parenthesis depth, and the depths at which a `FROM` list is open. A comma at such a
    // depth that the name lists below did not take (after a subquery, a function, a column
    // alias list, a join condition) may start another table: unsure.
    let mut depth = 0usize;
    let mut open_from: Vec<usize> = Vec::new();
    while i < toks.len() {
        let after_dot = i > 0 && toks[i - 1] == Tok::Punct(b'.');
        let w = match toks[i] {
            Tok::Word(w) => w,
            Tok::Punct(b'(') => {
                depth += 1;
                i += 1;
                continue;
            }
            Tok::Punct(b')') => {
                depth = depth.saturating_sub(1);
                open_from.retain(|d| *d <= depth);
                i += 1;
                continue;
            }
            Tok::Punct(b',') if open_from.last() == Some(&depth) => return None,
            _ => {
                i += 1;
                continue;
            }
        };
        i += 1;
        if after_dot {
            continue;
        }
        if is(w, FROM_ENDS) && open_from.last() == Some(&depth) {
            open_from.pop();
        }
        let prev = (i >= 2).then(|| toks[i - 2]);
        let prev_is = |list: &[&str]| matches!(prev, Some(Tok::Word(p)) if is(p, list));
        if w.eq_ignore_ascii_case("FROM") {
            if open_from.last() != Some(&depth) {
                open_from.push(depth);
            }
            let written = prev_is(&["DELETE"]);
            i = name_list(
                &toks,
                i,
                if written {
                    &mut use_.written
                } else {
                    &mut use_.read
                },
            )?;
        } else if w.eq_ignore_ascii_case("JOIN") {
            i = one_name(&toks, i, &mut use_.read)?;
        } else if w.eq_ignore_ascii_case("INTO") {
            i = target_name(&toks, i, &mut use_.written)?;
        } else if w.eq_ignore_ascii_case("UPDATE") {
            // `FOR UPDATE`, `FOR NO KEY UPDATE`, `ON CONFLICT ... DO UPDATE`: not a target
            if !prev_is(&["FOR", "KEY", "DO"]) {
                i = target_name(&toks, i, &mut use_.written)?;
            }
        } else if w.eq_ignore_ascii_case("TRUNCATE") {
            if matches!(toks.get(i), Some(Tok::Word(t)) if t.eq_ignore_ascii_case("TABLE")) {
                i += 1;
            }
            i = name_list(&toks, i, &mut use_.written)?;
        } else if w.eq_ignore_ascii_case("TABLE") && i == 1 {
            i = one_name(&toks, i, &mut use_.read)?;
        }
    }
    use_.read.sort_unstable();
    use_.read.dedup();
    use_.written.sort_unstable();
    use_.written.dedup();
    Some(use_)
}

/// What follows `FROM`, `JOIN`, `INTO`, ...
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A table; `i` after it.
    Table,
    /// A subquery or a function call: its own clauses name its tables.
    Nothing,
}

/// Reads one (qualified) table name at `i`, or recognises a subquery or a function call.
/// `None` when it is something else (the caller gives up on the statement).
fn one_name(toks: &[Tok<'_>], i: usize, out: &mut Vec<TableId>) -> Option<usize> {
    target(toks, i, out, true).map(|(i, _)| i)
}

/// Like [`one_name`], for a write target, where `(` after the name is a column list.
fn target_name(toks: &[Tok<'_>], i: usize, out: &mut Vec<TableId>) -> Option<usize> {
    match target(toks, i, out, false)? {
        (i, Target::Table) => Some(i),
        (_, Target::Nothing) => None,
    }
}

fn target(
    toks: &[Tok<'_>],
    mut i: usize,
    out: &mut Vec<TableId>,
    reading: bool,
) -> Option<(usize, Target)> {
    if matches!(toks.get(i), Some(Tok::Word(w)) if is(w, &["ONLY", "LATERAL"])) {
        i += 1;
    }
    if reading && toks.get(i) == Some(&Tok::Punct(b'(')) {
        // `(SELECT ...)` is a subquery; `("a" INNER JOIN "b" ...)` a parenthesised join
        let mut j = i;
        while toks.get(j) == Some(&Tok::Punct(b'(')) {
            j += 1;
        }
        return match toks.get(j) {
            Some(Tok::Word(w)) if is(w, &["SELECT", "WITH", "VALUES", "TABLE"]) => {
                Some((i, Target::Nothing))
            }
            _ => target(toks, j, out, reading),
        };
    }
    let mut last = None;
    loop {
        let continues = last.is_none() || toks[i - 1] == Tok::Punct(b'.');
        match toks.get(i) {
            Some(Tok::Word(w)) if continues => {
                last = Some(w.to_ascii_lowercase());
                i += 1;
            }
            Some(Tok::Quoted(q)) if continues => {
                last = Some((*q).to_owned());
                i += 1;
            }
            Some(Tok::Punct(b'.')) if last.is_some() => i += 1,
            _ => break,
        }
    }
    match (last, toks.get(i)) {
        (None, _) => None,
        // `FROM generate_series(..)`: a function, not a table
        (Some(_), Some(Tok::Punct(b'('))) if reading => Some((i, Target::Nothing)),
        (Some(name), _) => {
            out.push(intern(&name)?);
            Some((i, Target::Table))
        }
    }
}

/// A name, an optional alias, and more of both after commas (`FROM a, b x`).
fn name_list(toks: &[Tok<'_>], mut i: usize, out: &mut Vec<TableId>) -> Option<usize> {
    loop {
        i = one_name(toks, i, out)?;
        // an optional alias: `AS x`, `x`, `"x"`
        if matches!(toks.get(i), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("AS")) {
            i += 1;
        }
        match toks.get(i) {
            Some(Tok::Word(w)) if !is(w, CLAUSE_WORDS) => i += 1,
            Some(Tok::Quoted(_)) => i += 1,
            _ => {}
        }
        if toks.get(i) == Some(&Tok::Punct(b',')) {
            i += 1;
        } else {
            return Some(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ids: &[TableId]) -> Vec<String> {
        let mut out: Vec<String> = ids.iter().map(|id| table_name(*id).unwrap()).collect();
        out.sort();
        out
    }

    fn check(sql: &str, read: &[&str], written: &[&str]) {
        let t = tables(sql).unwrap_or_else(|| panic!("unsure about {sql}"));
        assert_eq!(names(&t.read), read, "read by {sql}");
        assert_eq!(names(&t.written), written, "written by {sql}");
    }

    #[test]
    fn diesel_selects_and_joins_read_their_tables() {
        check(
            r#"SELECT "users"."id" FROM "users" WHERE ("users"."id" = $1)"#,
            &["users"],
            &[],
        );
        check(
            r#"SELECT "users"."id", "posts"."id" FROM ("users" INNER JOIN "posts" ON ("posts"."user_id" = "users"."id")) LEFT OUTER JOIN "comments" ON true"#,
            &["comments", "posts", "users"],
            &[],
        );
        check(r#"SELECT COUNT(*) FROM "public"."users""#, &["users"], &[]);
    }

    #[test]
    fn writes_name_their_target() {
        check(
            r#"INSERT INTO "users" ("name") VALUES ($1) RETURNING "users"."id""#,
            &[],
            &["users"],
        );
        check(
            r#"UPDATE "users" SET "name" = $1 WHERE ("users"."id" = $2)"#,
            &[],
            &["users"],
        );
        check(
            r#"DELETE FROM "users" WHERE ("users"."id" = $1)"#,
            &[],
            &["users"],
        );
        check(
            r#"INSERT INTO "t" ("a") VALUES ($1) ON CONFLICT ("a") DO UPDATE SET "a" = excluded."a""#,
            &[],
            &["t"],
        );
        check("TRUNCATE TABLE a, b", &[], &["a", "b"]);
        check(
            r#"INSERT INTO "archive" SELECT * FROM "users" WHERE "id" < 10"#,
            &["users"],
            &["archive"],
        );
    }

    #[test]
    fn locking_clauses_are_not_writes() {
        check(r#"SELECT "id" FROM "users" FOR UPDATE"#, &["users"], &[]);
        check(
            r#"SELECT "id" FROM "users" FOR NO KEY UPDATE OF "users""#,
            &["users"],
            &[],
        );
    }

    #[test]
    fn subqueries_ctes_functions_and_comma_lists() {
        check(
            r#"SELECT * FROM (SELECT "id" FROM "users") AS u WHERE EXISTS (SELECT 1 FROM "posts")"#,
            &["posts", "users"],
            &[],
        );
        check("SELECT * FROM generate_series(1, 3)", &[], &[]);
        check(
            r#"SELECT * FROM (("a" INNER JOIN "b" ON true))"#,
            &["a", "b"],
            &[],
        );
        check(
            "select * from Users u, posts AS p where u.id = p.user_id",
            &["posts", "users"],
            &[],
        );
        check(
            "WITH gone AS (DELETE FROM users RETURNING *) SELECT * FROM gone",
            &["gone"],
            &["users"],
        );
    }

    #[test]
    fn a_comma_after_a_subquery_a_function_or_a_column_alias_list_is_unsure() {
        for sql in [
            r#"SELECT * FROM (SELECT 1) AS s, "secret""#,
            r#"SELECT * FROM generate_series(1, 3) AS g, "secret""#,
            r#"SELECT * FROM "a" AS x(c1, c2), "secret""#,
            r#"SELECT * FROM "a" JOIN "b" ON true, "secret""#,
            r#"SELECT * FROM "a" WHERE "id" IN (SELECT 1 FROM "b", "secret")"#,
        ] {
            let found = tables(sql);
            assert!(
                found.is_none() || names(&found.unwrap().read).contains(&"secret".to_string()),
                "{sql}"
            );
        }
        // commas elsewhere stay fine
        check(
            r#"SELECT "a"."x", coalesce("a"."y", 1) FROM "a" WHERE "a"."z" IN ($1, $2) ORDER BY 1, 2"#,
            &["a"],
            &[],
        );
        check(
            r#"SELECT * FROM "a" WHERE "id" IN (SELECT "x" FROM "b"), 1"#.trim_end_matches(", 1"),
            &["a", "b"],
            &[],
        );
    }

    #[test]
    fn unsure_statements_are_none() {
        assert_eq!(tables("CREATE TABLE t (id int)"), None);
        assert_eq!(tables("SELECT 'unterminated"), None);
        assert_eq!(tables("SELECT 1; DELETE FROM t"), None);
        assert_eq!(tables("SET search_path = x"), None);
        assert_eq!(tables(""), None);
        assert_eq!(tables("SELECT * FROM"), None);
        assert_eq!(tables("INSERT INTO (SELECT 1)"), None);
    }

    #[test]
    fn names_are_interned_once() {
        let a = intern("interned_table").unwrap();
        assert_eq!(intern("interned_table"), Some(a));
        assert_ne!(intern("other_interned_table"), Some(a));
        assert!(a > 0);
        assert_eq!(table_name(a).as_deref(), Some("interned_table"));
        assert_eq!(table_name(0), None);
    }
}
