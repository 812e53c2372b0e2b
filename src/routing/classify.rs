//! Classification of SQL statements for read/write splitting.
//!
//! [`Classifier::classify`] looks at the SQL text of one statement (as rendered by Diesel's
//! query builders with PostgreSQL `$1` binds or SQLite/MySQL `?` binds, or typed by hand) and
//! decides whether it may run on a read-only replica ([`StatementKind::Read`]) or must go to
//! the primary, and why. Every doubt errs towards the primary.
//!
//! # Rules
//!
//! * A single-pass, allocation-free lexer splits the text. It understands whitespace, `--`
//!   and nestable `/* */` comments, `'...'` strings (`''` escapes), `E'...'` strings
//!   (backslash escapes), `"..."` and `` `...` `` quoted identifiers, `$1` and `?` binds,
//!   `$tag$ ... $tag$` / `$$ ... $$` bodies, numbers and punctuation. Words inside literals,
//!   quoted identifiers, comments and dollar bodies never count. An unterminated construct
//!   anywhere, or text without any statement, is [`StatementKind::Unknown`].
//! * After skipping leading `(`, the first word decides: `SELECT`, `WITH`, `VALUES`, `TABLE`
//!   and `SHOW` are read candidates. `EXPLAIN` classifies the statement it explains, unless
//!   its options ask for `ANALYZE`/`ANALYSE`, which executes it. Anything else is a
//!   [`StatementKind::Write`].
//! * Every further token of a read candidate is scanned, at any parenthesis depth:
//!   - `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE` and MySQL's
//!     `LOCK IN SHARE MODE` make it [`StatementKind::Locking`];
//!   - the bare words `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `INTO`, `TRUNCATE`, `LOCK`,
//!     `CREATE`, `DROP` and `ALTER` make it a [`StatementKind::Write`] (data-modifying CTEs,
//!     `SELECT ... INTO`), except right after a `.` where they name a column (`t.update`);
//!   - a call of a name from [`BUILTIN_WRITE_FUNCTIONS`] or from the user's list makes it a
//!     [`StatementKind::WriteFunction`].
//!
//!   The strongest finding wins: `Write` > `Locking` > `WriteFunction` > `Read`.
//!   A configured write function also counts in attribute notation (`t.touch` calls
//!   `touch(t)` in PostgreSQL). With [`Classifier::unknown_functions_to_primary`], a call of
//!   any function that is not a built-in read function or a configured read function is a
//!   [`StatementKind::WriteFunction`] too.
//! * A `U&"..."` identifier (its name is not its text) makes the statement
//!   [`StatementKind::Unknown`].
//! * Text holding several `;`-separated statements gets the strongest kind among them.
//! * MySQL executable comments `/*! ... */` are lexed as SQL in the MySQL dialect
//!   ([`Classifier::mysql_dialect`]), since MySQL runs their content; PostgreSQL and SQLite
//!   comments are comments.
//! * Beyond the kind, each statement's transaction control (`BEGIN`, `COMMIT`, savepoints,
//!   ...) and session effect (`SET`, temporary tables, `DISCARD ALL`, ...) is read from its
//!   first words (`statement.rs`), so the routed connection follows them whichever method
//!   sent the statement.

use std::fmt;

use super::functions::{
    BUILTIN_WRITE_FUNCTIONS, CALL_CONTEXT, KNOWN_READ_FUNCTIONS, NOT_CALLS, NO_DATA_FUNCTIONS,
    SESSION_FUNCTIONS,
};
use super::lexer::{Lexer, Token, Unterminated};
use super::statement::{head_info, Rest, TEMP_WORDS};
pub(crate) use super::statement::{SessionChange, StatementInfo, TxControl};

/// What a statement needs from the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub(crate) enum StatementKind {
    /// A plain read: may run on a replica.
    Read,
    /// Writes data or schema, changes session state, or is not a read (INSERT, UPDATE, DELETE,
    /// MERGE, DDL, SET, CALL, COPY, SELECT ... INTO, data-modifying CTEs, EXPLAIN ANALYZE, ...).
    Write,
    /// A locking read: SELECT ... FOR UPDATE / FOR NO KEY UPDATE / FOR SHARE / FOR KEY SHARE,
    /// MySQL's LOCK IN SHARE MODE.
    Locking,
    /// A read that calls a write or session-bound function (nextval, advisory locks,
    /// last_insert_rowid, a user-configured name, ...).
    WriteFunction,
    /// The lexer could not decide (empty text, unterminated string/comment/identifier/
    /// dollar-quote): treated as primary.
    Unknown,
}

impl StatementKind {
    /// True only for [`StatementKind::Read`], the one kind a replica may serve.
    #[must_use]
    pub(crate) fn is_read(self) -> bool {
        self == StatementKind::Read
    }

    /// Short lowercase name: "read", "write", "locking", "write_function", "unknown".
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Write => "write",
            StatementKind::Locking => "locking",
            StatementKind::WriteFunction => "write_function",
            StatementKind::Unknown => "unknown",
        }
    }

    /// Strength used to combine several findings: the strongest one wins.
    fn strength(self) -> u8 {
        match self {
            StatementKind::Read => 0,
            StatementKind::WriteFunction => 1,
            StatementKind::Locking => 2,
            StatementKind::Write => 3,
            StatementKind::Unknown => 4,
        }
    }

    /// The stronger of `self` and `other`.
    pub(crate) fn stronger(self, other: Self) -> Self {
        if other.strength() > self.strength() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// First words of statements that may be plain reads.
const READ_HEADS: &[&str] = &["SELECT", "WITH", "VALUES", "TABLE", "SHOW"];
/// Bare words that make a read candidate a write.
const WRITE_WORDS: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "TRUNCATE", "LOCK", "CREATE", "DROP", "ALTER",
];
/// Words of a locking strength after `FOR` (`UPDATE`, `NO KEY UPDATE`, `SHARE`, `KEY SHARE`).
const LOCK_STRENGTH_WORDS: &[&str] = &["UPDATE", "SHARE", "KEY", "NO"];
/// `EXPLAIN` options that execute the explained statement.
const EXPLAIN_ANALYZE: &[&str] = &["ANALYZE", "ANALYSE"];
/// Bare `EXPLAIN` options that do not execute anything (PostgreSQL, SQLite).
const EXPLAIN_NOISE: &[&str] = &["VERBOSE", "QUERY", "PLAN"];
/// How many trailing parts of a qualified function name are remembered.
const MAX_NAME_PARTS: usize = 4;

/// Classifies SQL text. Holds the extra user-configured function names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Classifier {
    /// User-configured write function names, lowercase, possibly qualified (`app.touch`).
    extra: Vec<String>,
    /// MySQL dialect: `/*! ... */` comments are executed.
    mysql: bool,
    /// `unknown_functions = "primary"`: a call of a function not known to only read goes to
    /// the primary.
    unknown_to_primary: bool,
    /// User functions known to only read (lowercase, possibly qualified).
    read_only: Vec<String>,
}

impl Classifier {
    /// A classifier with only the built-in function list.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A classifier that also treats these function names as write functions.
    ///
    /// Names are ASCII case-insensitive. A schema-qualified name like `app.touch` matches a
    /// call written `app.touch(` (or `"app"."touch"(`); a bare name matches any schema.
    #[must_use]
    pub(crate) fn with_write_functions<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let extra = names
            .into_iter()
            .map(|name| name.as_ref().trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        Self {
            extra,
            ..Self::default()
        }
    }

    /// Sends every read that calls a function the classifier does not know to only read
    /// (built-in read functions, and those named with
    /// [`with_read_functions`](Self::with_read_functions)) to the primary. Defaults to off:
    /// unknown functions run on replicas, where a function that writes fails loudly but one
    /// that only takes a lock succeeds silently.
    #[must_use]
    pub(crate) fn unknown_functions_to_primary(mut self, on: bool) -> Self {
        self.unknown_to_primary = on;
        self
    }

    /// User functions known to only read, for
    /// [`unknown_functions_to_primary`](Self::unknown_functions_to_primary). Defaults to none.
    #[must_use]
    pub(crate) fn with_read_functions<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.read_only.extend(
            names
                .into_iter()
                .map(|name| name.as_ref().trim().to_ascii_lowercase())
                .filter(|name| !name.is_empty()),
        );
        self
    }

    /// Reads SQL as MySQL does, which executes the content of `/*! ... */` comments.
    /// PostgreSQL and SQLite treat them as comments. Defaults to off.
    #[must_use]
    pub(crate) fn mysql_dialect(mut self, on: bool) -> Self {
        self.mysql = on;
        self
    }

    /// Classifies one statement's SQL text.
    #[must_use]
    #[cfg_attr(not(any(test, feature = "bench-internals")), allow(dead_code))]
    pub(crate) fn classify(&self, sql: &str) -> StatementKind {
        let mut overall: Option<StatementKind> = None;
        self.analyze(sql, |info| {
            overall = Some(overall.map_or(info.kind, |seen| seen.stronger(info.kind)));
        });
        overall.unwrap_or(StatementKind::Unknown)
    }

    /// Calls `f` with what each statement of `sql` does, in order. Text the lexer cannot
    /// finish ends with [`StatementInfo::UNKNOWN`].
    pub(crate) fn analyze(&self, sql: &str, mut f: impl FnMut(StatementInfo)) {
        let mut lexer = Lexer::new(sql, self.mysql);
        loop {
            match self.statement(&mut lexer) {
                Err(Unterminated) => return f(StatementInfo::UNKNOWN),
                Ok((info, more)) => {
                    if let Some(info) = info {
                        f(info);
                    }
                    if !more {
                        return;
                    }
                }
            }
        }
    }

    /// Classifies the statement at the lexer's position, consuming it and its `;`.
    ///
    /// Returns what it does (`None` for an empty statement) and whether a `;` ended it.
    fn statement(&self, lx: &mut Lexer<'_>) -> Result<(Option<StatementInfo>, bool), Unterminated> {
        let mut explaining = false;
        let head = loop {
            let token = lx.next_token()?;
            match token {
                None | Some(Token::Punct(b';')) => {
                    // A bare `EXPLAIN` is not a read; an empty statement is nothing.
                    let info = explaining.then(|| StatementInfo::of_kind(StatementKind::Write));
                    return Ok((info, token.is_some()));
                }
                Some(Token::Punct(b'(')) if explaining => {
                    if explain_options_analyze(lx)? {
                        break None;
                    }
                }
                Some(Token::Punct(b'(')) => {} // leading parentheses
                Some(Token::Word(w)) if explaining && is_one_of(w, EXPLAIN_ANALYZE) => {
                    break None;
                }
                Some(Token::Word(w)) if explaining && is_one_of(w, EXPLAIN_NOISE) => {}
                Some(Token::Word(w)) if !explaining && w.eq_ignore_ascii_case("EXPLAIN") => {
                    explaining = true;
                }
                Some(Token::Word(w)) if is_one_of(w, READ_HEADS) => {
                    return self.scan_read(lx).map(|(info, more)| (Some(info), more));
                }
                // MySQL's `DO expr, ..` evaluates like a SELECT that returns nothing: its
                // calls (`DO GET_LOCK(..)`) decide, as they would in a SELECT
                Some(Token::Word(w))
                    if self.mysql && !explaining && w.eq_ignore_ascii_case("DO") =>
                {
                    return self.scan_read(lx).map(|(info, more)| (Some(info), more));
                }
                Some(Token::Word(w)) if !explaining => break Some(w),
                Some(_) => break None,
            }
        };
        let mut rest = Rest::default();
        let more = rest.scan(lx)?;
        let info = match head {
            None => StatementInfo::of_kind(StatementKind::Write),
            Some(word) => head_info(word, &rest, self.mysql),
        };
        Ok((Some(info), more))
    }

    /// Scans the rest of a read candidate; returns what it does and whether a `;` ended it.
    fn scan_read(&self, lx: &mut Lexer<'_>) -> Result<(StatementInfo, bool), Unterminated> {
        let mut found = StatementKind::Read;
        let mut session = SessionChange::None;
        let mut name = NameChain::default();
        let mut after_into = false;
        // a write function that may change data was called (not only a lock or a setting)
        let mut writes_data = false;
        // a qualified name just ended: without a `(` after it, it may be attribute notation
        let mut qualified = false;
        // the token before: may a name that starts here be called (not an alias, not a type)?
        let mut call_context = true;
        // ... and was the current name started in such a place?
        let mut name_is_callable = false;
        // MySQL: the punctuation before (`@x :=` assigns a user variable)
        let mut previous_punct = None;
        loop {
            let token = lx.next_token()?;
            let ended =
                std::mem::take(&mut qualified) && !matches!(token, Some(Token::Punct(b'(' | b'.')));
            if ended && self.attribute_call(&name) == StatementKind::WriteFunction {
                found = found.stronger(StatementKind::WriteFunction);
                writes_data = true;
                // a configured function: it may leave a lock in the session
                session = session.stronger(SessionChange::Held);
            }
            let Some(token) = token else {
                break Ok((read_info(found, session, writes_data), false));
            };
            let was_after_into = std::mem::take(&mut after_into);
            let before = std::mem::replace(
                &mut previous_punct,
                match token {
                    Token::Punct(p) => Some(p),
                    _ => None,
                },
            );
            if self.mysql {
                match (before, token) {
                    // `SELECT .. INTO @x`: sets a user variable of the session
                    (_, Token::Punct(b'@')) if was_after_into => {
                        found = found.stronger(StatementKind::WriteFunction);
                        session = session.stronger(SessionChange::Other);
                    }
                    // `@x := ..`: the same, inside any expression
                    (Some(b':'), Token::Punct(b'=')) => {
                        found = found.stronger(StatementKind::WriteFunction);
                        session = session.stronger(SessionChange::Other);
                    }
                    _ => {}
                }
            }
            let context = std::mem::replace(
                &mut call_context,
                match token {
                    Token::Word(w) => is_one_of(w, CALL_CONTEXT),
                    Token::Punct(b':' | b')') | Token::Quoted(_) | Token::Other => false,
                    _ => true,
                },
            );
            if matches!(token, Token::Word(_) | Token::Quoted(_)) && !name.after_dot {
                name_is_callable = context;
            }
            match token {
                Token::Punct(b';') => break Ok((read_info(found, session, writes_data), true)),
                Token::Word(w) => {
                    // After a `.` a word is part of a qualified name, never a keyword; it may
                    // still be a function called in attribute notation (`t.touch` = `touch(t)`)
                    if name.after_dot {
                        name.push(w);
                        qualified = true;
                        continue;
                    }
                    // Checked first: the clause's `UPDATE`/`LOCK` is not a write.
                    let locking = (w.eq_ignore_ascii_case("FOR") && locking_clause(lx)?)
                        || (w.eq_ignore_ascii_case("LOCK") && lock_in_share_mode(lx)?);
                    if locking {
                        found = found.stronger(StatementKind::Locking);
                        name.reset();
                        continue;
                    }
                    if is_one_of(w, WRITE_WORDS) {
                        found = found.stronger(StatementKind::Write);
                    }
                    if w.eq_ignore_ascii_case("INTO") {
                        after_into = true;
                    } else if was_after_into && is_one_of(w, TEMP_WORDS) {
                        // `SELECT ... INTO TEMP t`: a temporary table
                        session = SessionChange::Other;
                    }
                    name.push(w);
                }
                Token::Quoted(q) => {
                    qualified = name.after_dot;
                    name.push(q);
                }
                // a name the lexer cannot read: it may call anything
                Token::UnicodeQuoted => {
                    found = found.stronger(StatementKind::Unknown);
                    name.reset();
                }
                Token::Punct(b'.') => name.dot(),
                Token::Punct(b'(') => {
                    if let Some(parts) = name.called() {
                        if self.is_write_function(parts) {
                            found = found.stronger(StatementKind::WriteFunction);
                            session = session.stronger(self.function_session(parts));
                            writes_data |= self.is_configured_function(parts)
                                || !parts
                                    .last()
                                    .is_some_and(|f| is_one_of(f, NO_DATA_FUNCTIONS));
                        } else if self.unknown_to_primary
                            && name_is_callable
                            && !self.is_known_read_function(parts)
                        {
                            // a function nobody said only reads: assume it may write or lock
                            found = found.stronger(StatementKind::WriteFunction);
                            session = session.stronger(SessionChange::Held);
                            writes_data = true;
                        }
                    }
                    name.reset();
                }
                Token::Punct(_) | Token::Other => name.reset(),
            }
        }
    }

    /// Session state a write function call leaves: what the built-in ones are known to
    /// leave; for a configured one, the worst (it may take a session lock).
    fn function_session(&self, parts: &[&str]) -> SessionChange {
        if self.is_configured_function(parts) {
            return SessionChange::Held;
        }
        parts
            .last()
            .map_or(SessionChange::None, |f| function_session(f))
    }

    /// `x.f` may call `f(x)` in PostgreSQL's attribute notation, when `f` takes a row type.
    /// No built-in write function does, so only the configured names count here.
    fn attribute_call(&self, name: &NameChain<'_>) -> StatementKind {
        match name.called() {
            Some(parts) if parts.len() >= 2 => {
                // attribute notation names no schema: any configured function of that name
                let function = parts[parts.len() - 1];
                let configured = self.extra.iter().any(|c| {
                    c.rsplit('.')
                        .next()
                        .is_some_and(|f| f.eq_ignore_ascii_case(function))
                });
                if configured {
                    StatementKind::WriteFunction
                } else {
                    StatementKind::Read
                }
            }
            _ => StatementKind::Read,
        }
    }

    /// Whether `parts` names a built-in read function, syntax that looks like a call, or a
    /// configured read function.
    fn is_known_read_function(&self, parts: &[&str]) -> bool {
        let Some(last) = parts.last() else {
            return true;
        };
        is_one_of(last, KNOWN_READ_FUNCTIONS)
            || is_one_of(last, NOT_CALLS)
            || self.read_only.iter().any(|configured| {
                let mut called = parts.iter().rev();
                configured
                    .rsplit('.')
                    .all(|part| called.next().is_some_and(|c| c.eq_ignore_ascii_case(part)))
            })
    }

    /// Whether `parts` names one of the configured write functions.
    fn is_configured_function(&self, parts: &[&str]) -> bool {
        self.extra.iter().any(|configured| {
            // Compare from the end: `touch` matches `x.touch`, `app.touch` needs `app.`.
            let mut called = parts.iter().rev();
            configured
                .rsplit('.')
                .all(|part| called.next().is_some_and(|c| c.eq_ignore_ascii_case(part)))
        })
    }

    /// Whether a call of the qualified name `parts` (last part = function) forces the primary.
    fn is_write_function(&self, parts: &[&str]) -> bool {
        let Some(last) = parts.last() else {
            return false;
        };
        BUILTIN_WRITE_FUNCTIONS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(last))
            || self.is_configured_function(parts)
    }
}

/// A read candidate's info: a read that calls a session function leaves that state behind;
/// one that calls only functions that take locks or read settings writes no data.
fn read_info(kind: StatementKind, session: SessionChange, writes_data: bool) -> StatementInfo {
    let info = StatementInfo::of_kind(kind);
    StatementInfo {
        session: if kind == StatementKind::Unknown {
            SessionChange::Other
        } else {
            session
        },
        writes: if kind == StatementKind::WriteFunction {
            writes_data
        } else {
            info.writes
        },
        ..info
    }
}

/// Session state left by a built-in write function: settings for `set_config`, locks held
/// by the session for the advisory locks that outlive their transaction.
fn function_session(name: &str) -> SessionChange {
    if name.eq_ignore_ascii_case("set_config") {
        SessionChange::Settings
    } else if is_one_of(name, SESSION_FUNCTIONS) {
        SessionChange::Held
    } else {
        SessionChange::None
    }
}

/// True when `word` equals one of `list`, ignoring ASCII case.
pub(super) fn is_one_of(word: &str, list: &[&str]) -> bool {
    list.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// Consumes a parenthesised `EXPLAIN` option list (after its `(`); true if it asks for ANALYZE.
fn explain_options_analyze(lx: &mut Lexer<'_>) -> Result<bool, Unterminated> {
    let mut depth = 1usize;
    let mut analyze = false;
    while depth > 0 {
        match lx.next_token()? {
            None => break,
            Some(Token::Punct(b'(')) => depth += 1,
            Some(Token::Punct(b')')) => depth -= 1,
            Some(Token::Word(w)) if is_one_of(w, EXPLAIN_ANALYZE) => {
                // `ANALYZE FALSE` / `ANALYZE OFF` do not execute the statement
                let mut probe = lx.clone();
                match probe.next_token()? {
                    Some(Token::Word(v)) if is_one_of(v, &["FALSE", "OFF"]) => *lx = probe,
                    _ => analyze = true,
                }
            }
            Some(_) => {}
        }
    }
    Ok(analyze)
}

/// After a bare `FOR`: consumes a locking strength (`UPDATE`, `NO KEY UPDATE`, `SHARE`,
/// `KEY SHARE`) so its `UPDATE` is not taken for a write, and reports whether there was one.
fn locking_clause(lx: &mut Lexer<'_>) -> Result<bool, Unterminated> {
    let mut found = false;
    loop {
        let mut probe = lx.clone();
        match probe.next_token()? {
            Some(Token::Word(w)) if is_one_of(w, LOCK_STRENGTH_WORDS) => {
                *lx = probe;
                found = true;
            }
            _ => return Ok(found),
        }
    }
}

/// After a bare `LOCK`: consumes MySQL's `IN SHARE MODE` and reports whether it was there.
fn lock_in_share_mode(lx: &mut Lexer<'_>) -> Result<bool, Unterminated> {
    let mut probe = lx.clone();
    for expected in ["IN", "SHARE", "MODE"] {
        match probe.next_token()? {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(expected) => {}
            _ => return Ok(false),
        }
    }
    *lx = probe;
    Ok(true)
}

/// The trailing parts of the (possibly qualified) name just read, to recognise calls.
#[derive(Default)]
struct NameChain<'a> {
    /// The last `len` parts, oldest first.
    parts: [&'a str; MAX_NAME_PARTS],
    /// How many parts are held; 0 when the last token was not part of a name.
    len: usize,
    /// The last token was a `.` right after a name part.
    after_dot: bool,
}

impl<'a> NameChain<'a> {
    /// Adds a name part: continues the name after a `.`, otherwise starts a new one.
    fn push(&mut self, part: &'a str) {
        if !self.after_dot {
            self.len = 0;
        } else if self.len == MAX_NAME_PARTS {
            self.parts.rotate_left(1);
            self.len -= 1;
        }
        self.parts[self.len] = part;
        self.len += 1;
        self.after_dot = false;
    }

    /// Records a `.`: it qualifies the name only if one was just read.
    fn dot(&mut self) {
        if self.len > 0 && !self.after_dot {
            self.after_dot = true;
        } else {
            self.reset();
        }
    }

    /// Forgets the name.
    fn reset(&mut self) {
        self.len = 0;
        self.after_dot = false;
    }

    /// The complete name that a following `(` would call, if any.
    fn called(&self) -> Option<&[&'a str]> {
        (self.len > 0 && !self.after_dot).then(|| &self.parts[..self.len])
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
