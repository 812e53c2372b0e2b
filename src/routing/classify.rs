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
//! * Text holding several `;`-separated statements gets the strongest kind among them.
//! * MySQL executable comments `/*! ... */` are lexed as SQL, since MySQL runs their content.

use std::fmt;

use super::functions::{
    BUILTIN_WRITE_FUNCTIONS, CALL_CONTEXT, KNOWN_READ_FUNCTIONS, NOT_CALLS, NO_DATA_FUNCTIONS,
    SESSION_FUNCTIONS,
};
use super::lexer::{Lexer, Token, Unterminated};

/// What a statement needs from the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatementKind {
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
    pub fn is_read(self) -> bool {
        self == StatementKind::Read
    }

    /// Short lowercase name: "read", "write", "locking", "write_function", "unknown".
    #[must_use]
    pub fn as_str(self) -> &'static str {
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

/// Transaction control, as far as the router follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxControl {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `COMMIT AND CHAIN`: ends the transaction and opens the next one.
    CommitAndChain,
    /// `ROLLBACK`, `ABORT`, `PREPARE TRANSACTION` (the transaction leaves this session).
    Rollback,
    /// `ROLLBACK AND CHAIN`.
    RollbackAndChain,
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: the transaction stays open.
    Savepoint,
}

/// What a statement leaves behind in its session, beyond its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionChange {
    /// Nothing.
    None,
    /// Settings that `RESET ALL` restores: `SET x`, `RESET x`, `set_config(..)`.
    Settings,
    /// State only a new session (or `DISCARD ALL`) clears and that changes what reads see:
    /// temporary tables, roles, SQLite pragmas and attachments, loaded libraries, statements
    /// the classifier could not read.
    Other,
    /// State that does not change what reads see but must not reach the next user of the
    /// connection: session advisory locks, `LISTEN`, prepared statements, cursors, whatever a
    /// configured write function leaves.
    Held,
    /// `RESET ALL`: settings are back to their defaults.
    ResetAll,
    /// `DISCARD ALL`: the session is as new.
    DiscardAll,
}

impl SessionChange {
    fn stronger(self, other: Self) -> Self {
        use SessionChange::*;
        match (self, other) {
            (Other, _) | (_, Other) => Other,
            (Settings, _) | (_, Settings) => Settings,
            (Held, _) | (_, Held) => Held,
            (a, None) => a,
            (_, b) => b,
        }
    }
}

/// What the router must know of one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatementInfo {
    /// Where it may run.
    pub(crate) kind: StatementKind,
    /// It may change data, so its commit is a write (pin window, replication position).
    pub(crate) writes: bool,
    /// Transaction control it performs.
    pub(crate) tx: Option<TxControl>,
    /// Session state it leaves behind.
    pub(crate) session: SessionChange,
}

impl StatementInfo {
    /// What the router assumes of text it cannot read: the primary, a write, and session
    /// state it cannot know.
    pub(crate) const UNKNOWN: StatementInfo = StatementInfo {
        kind: StatementKind::Unknown,
        writes: true,
        tx: None,
        session: SessionChange::Other,
    };

    /// A plain data write.
    pub(crate) const WRITE: StatementInfo = StatementInfo {
        kind: StatementKind::Write,
        writes: true,
        tx: None,
        session: SessionChange::None,
    };

    fn of_kind(kind: StatementKind) -> Self {
        StatementInfo {
            kind,
            writes: !matches!(kind, StatementKind::Read | StatementKind::Locking),
            tx: None,
            session: SessionChange::None,
        }
    }

    /// A statement that is not a read and changes no data (transaction control, `SET`, ...).
    fn control(tx: Option<TxControl>, session: SessionChange) -> Self {
        StatementInfo {
            kind: StatementKind::Write,
            writes: false,
            tx,
            session,
        }
    }
}

/// Classifies SQL text. Holds the extra user-configured function names.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
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
    pub fn new() -> Self {
        Self::default()
    }

    /// A classifier that also treats these function names as write functions.
    ///
    /// Names are ASCII case-insensitive. A schema-qualified name like `app.touch` matches a
    /// call written `app.touch(` (or `"app"."touch"(`); a bare name matches any schema.
    #[must_use]
    pub fn with_write_functions<I, S>(names: I) -> Self
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
    pub fn unknown_functions_to_primary(mut self, on: bool) -> Self {
        self.unknown_to_primary = on;
        self
    }

    /// User functions known to only read, for
    /// [`unknown_functions_to_primary`](Self::unknown_functions_to_primary). Defaults to none.
    #[must_use]
    pub fn with_read_functions<I, S>(mut self, names: I) -> Self
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
    pub fn mysql_dialect(mut self, on: bool) -> Self {
        self.mysql = on;
        self
    }

    /// Classifies one statement's SQL text.
    #[must_use]
    pub fn classify(&self, sql: &str) -> StatementKind {
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
                Some(Token::Word(w)) if !explaining => break Some(w),
                Some(_) => break None,
            }
        };
        let mut rest = Rest::default();
        let more = rest.scan(lx)?;
        let info = match head {
            None => StatementInfo::of_kind(StatementKind::Write),
            Some(word) => head_info(word, &rest),
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

/// Words that make `CREATE ...` or `... INTO ...` temporary.
const TEMP_WORDS: &[&str] = &["TEMP", "TEMPORARY"];

/// The first words of a statement that is not a read candidate, and what they say.
#[derive(Default)]
struct Rest<'a> {
    /// The first few words after the head, uppercased comparisons done by the caller.
    words: [&'a str; 4],
    count: usize,
    /// `TEMP`/`TEMPORARY` before the first `(` or `AS`, or `pg_temp` anywhere.
    temp: bool,
    /// `=` or `(` appeared (a `PRAGMA` that sets something).
    assigns: bool,
    /// Seen a `(` or `AS`: later `TEMP` words are not the object's kind.
    past_head: bool,
}

impl<'a> Rest<'a> {
    /// Consumes the rest of the statement and its `;`; returns whether there was one.
    fn scan(&mut self, lx: &mut Lexer<'a>) -> Result<bool, Unterminated> {
        loop {
            match lx.next_token()? {
                None => return Ok(false),
                Some(Token::Punct(b';')) => return Ok(true),
                Some(Token::Word(w)) => {
                    if self.count < self.words.len() {
                        self.words[self.count] = w;
                    }
                    self.count += 1;
                    if w.eq_ignore_ascii_case("pg_temp")
                        || (!self.past_head && is_one_of(w, TEMP_WORDS))
                    {
                        self.temp = true;
                    }
                    if w.eq_ignore_ascii_case("AS") {
                        self.past_head = true;
                    }
                }
                Some(Token::Quoted(q)) => {
                    if q.eq_ignore_ascii_case("pg_temp") {
                        self.temp = true;
                    }
                    self.count += 1;
                }
                Some(Token::Punct(b'=' | b'(')) => {
                    self.assigns = true;
                    self.past_head = true;
                }
                Some(_) => self.count += 1,
            }
        }
    }

    /// Is word `i` after the head (0-based) `word`?
    fn is(&self, i: usize, word: &str) -> bool {
        i < self.count.min(self.words.len()) && self.words[i].eq_ignore_ascii_case(word)
    }

    /// Does `word` appear among the first words after the head?
    fn has(&self, word: &str) -> bool {
        self.words[..self.count.min(self.words.len())]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(word))
    }
}

/// What a statement that is not a read candidate does, from its first word and the rest.
fn head_info(head: &str, rest: &Rest<'_>) -> StatementInfo {
    use SessionChange as S;
    let h = |w: &str| head.eq_ignore_ascii_case(w);
    let tx = |t| StatementInfo::control(Some(t), S::None);
    let session = |s| StatementInfo::control(None, s);
    let chain = rest.has("CHAIN") && !rest.has("NO");
    if h("BEGIN") || (h("START") && rest.is(0, "TRANSACTION")) {
        tx(TxControl::Begin)
    } else if h("COMMIT") || h("END") {
        if rest.is(0, "PREPARED") {
            // commits a prepared transaction: a write, outside any transaction
            StatementInfo::of_kind(StatementKind::Write)
        } else if chain {
            tx(TxControl::CommitAndChain)
        } else {
            tx(TxControl::Commit)
        }
    } else if h("ROLLBACK") || h("ABORT") {
        if rest.has("TO") {
            tx(TxControl::Savepoint)
        } else if rest.is(0, "PREPARED") {
            session(S::None)
        } else if chain {
            tx(TxControl::RollbackAndChain)
        } else {
            tx(TxControl::Rollback)
        }
    } else if h("SAVEPOINT") || h("RELEASE") {
        tx(TxControl::Savepoint)
    } else if h("PREPARE") {
        if rest.is(0, "TRANSACTION") {
            // the transaction leaves this session; its writes commit with COMMIT PREPARED
            tx(TxControl::Rollback)
        } else {
            session(S::Held)
        }
    } else if h("SET") {
        if rest.is(0, "LOCAL") || rest.is(0, "TRANSACTION") || rest.is(0, "CONSTRAINTS") {
            session(S::None) // ends with the transaction
        } else if rest.is(0, "ROLE") || rest.is(1, "AUTHORIZATION") || rest.is(1, "ROLE") {
            session(S::Other)
        } else {
            session(S::Settings)
        }
    } else if h("RESET") {
        if rest.is(0, "ALL") {
            session(S::ResetAll)
        } else {
            session(S::Settings)
        }
    } else if h("DISCARD") {
        if rest.is(0, "ALL") {
            session(S::DiscardAll)
        } else {
            session(S::Other)
        }
    } else if h("DEALLOCATE") || h("LISTEN") || h("UNLISTEN") || h("DECLARE") {
        session(S::Held)
    } else if h("LOAD") || h("USE") || h("ATTACH") || h("DETACH") {
        session(S::Other)
    } else if h("PRAGMA") {
        if rest.assigns {
            // may set a connection option, or write to the file (`user_version`)
            StatementInfo {
                session: S::Other,
                ..StatementInfo::of_kind(StatementKind::Write)
            }
        } else {
            session(S::None)
        }
    } else if h("CREATE") && rest.temp {
        session(S::Other)
    } else {
        StatementInfo::of_kind(StatementKind::Write)
    }
}

/// True when `word` equals one of `list`, ignoring ASCII case.
fn is_one_of(word: &str, list: &[&str]) -> bool {
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
mod tests {
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
}
