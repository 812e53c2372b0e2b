//! What one statement does besides reading or writing rows: transaction control and
//! session state, read from its first words.

use super::classify::{is_one_of, StatementKind};
use super::lexer::{Lexer, Token, Unterminated};

/// Transaction control, as far as the router follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxControl {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `BEGIN .. READ ONLY` (not serializable): a replica may run it.
    BeginReadOnly,
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
    /// MySQL's `SET autocommit = 0` (or a value the router cannot read): a transaction is
    /// open from here on, and every `COMMIT` or `ROLLBACK` opens the next one.
    AutocommitOff,
    /// MySQL's `SET autocommit = 1`: commits the open transaction; statements commit as they
    /// run again.
    AutocommitOn,
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
    pub(super) fn stronger(self, other: Self) -> Self {
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

    pub(super) fn of_kind(kind: StatementKind) -> Self {
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

/// Words that make `CREATE ...` or `... INTO ...` temporary.
pub(super) const TEMP_WORDS: &[&str] = &["TEMP", "TEMPORARY"];

/// The first words of a statement that is not a read candidate, and what they say.
#[derive(Default)]
pub(super) struct Rest<'a> {
    /// The first few words after the head, uppercased comparisons done by the caller.
    words: [&'a str; 4],
    count: usize,
    /// `TEMP`/`TEMPORARY` before the first `(` or `AS`, or `pg_temp` anywhere.
    temp: bool,
    /// `=` or `(` appeared (a `PRAGMA` that sets something).
    assigns: bool,
    /// Seen a `(` or `AS`: later `TEMP` words are not the object's kind.
    past_head: bool,
    /// `READ ONLY` (and no `READ WRITE` after it).
    read_only: bool,
    /// `SERIALIZABLE` appeared.
    serializable: bool,
    /// The word before, to read `READ ONLY` / `READ WRITE`.
    previous: Option<&'a str>,
    /// `AUTOCOMMIT` appeared anywhere (MySQL's `SET [@@session.]autocommit = ..`).
    autocommit: bool,
    /// ... and the value after its `=`, when it reads as one: on (`1`, `ON`, `TRUE`) or off.
    autocommit_on: Option<bool>,
    /// Where the reading of `AUTOCOMMIT = value` is: 1 after the word, 2 after the `=`.
    autocommit_step: u8,
}

impl<'a> Rest<'a> {
    /// Consumes the rest of the statement and its `;`; returns whether there was one.
    pub(super) fn scan(&mut self, lx: &mut Lexer<'a>) -> Result<bool, Unterminated> {
        loop {
            let token = lx.next_token()?;
            if !matches!(token, Some(Token::Word(_) | Token::Punct(b','))) {
                self.previous = None;
            }
            self.autocommit_step = match (self.autocommit_step, token) {
                (1, Some(Token::Punct(b'='))) => 2,
                (2, Some(Token::Word(_) | Token::Other)) => {
                    self.autocommit_on = match lx.last_token().to_ascii_uppercase().as_str() {
                        "1" | "ON" | "TRUE" => Some(true),
                        "0" | "OFF" | "FALSE" => Some(false),
                        _ => None,
                    };
                    0
                }
                _ => 0,
            };
            match token {
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
                    if self
                        .previous
                        .is_some_and(|p| p.eq_ignore_ascii_case("READ"))
                    {
                        if w.eq_ignore_ascii_case("ONLY") {
                            self.read_only = true;
                        } else if w.eq_ignore_ascii_case("WRITE") {
                            self.read_only = false;
                        }
                    }
                    if w.eq_ignore_ascii_case("SERIALIZABLE") {
                        self.serializable = true;
                    }
                    if w.eq_ignore_ascii_case("AUTOCOMMIT") {
                        self.autocommit = true;
                        self.autocommit_step = 1;
                    }
                    self.previous = Some(w);
                    continue;
                }
                Some(Token::Quoted(q)) => {
                    if q.eq_ignore_ascii_case("pg_temp") {
                        self.temp = true;
                    }
                    self.count += 1;
                }
                Some(Token::Punct(b',')) => continue, // `BEGIN ISOLATION LEVEL .., READ ONLY`
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

/// What a statement that is not a read candidate does, from its head word and the words
/// after; `mysql`: read as MySQL/MariaDB do.
pub(super) fn head_info(head: &str, rest: &Rest<'_>, mysql: bool) -> StatementInfo {
    use SessionChange as S;
    let h = |w: &str| head.eq_ignore_ascii_case(w);
    let tx = |t| StatementInfo::control(Some(t), S::None);
    let session = |s| StatementInfo::control(None, s);
    let chain = rest.has("CHAIN") && !rest.has("NO");
    if mysql {
        if let Some(info) = mysql_head_info(head, rest) {
            return info;
        }
    }
    if h("BEGIN") || (h("START") && rest.is(0, "TRANSACTION")) {
        // a hot standby runs read-only transactions, but not serializable ones
        if rest.read_only && !rest.serializable {
            tx(TxControl::BeginReadOnly)
        } else {
            tx(TxControl::Begin)
        }
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

/// Statements MySQL and MariaDB read differently from PostgreSQL and SQLite, or only they
/// have; `None`: as the other dialects.
fn mysql_head_info(head: &str, rest: &Rest<'_>) -> Option<StatementInfo> {
    use SessionChange as S;
    let h = |w: &str| head.eq_ignore_ascii_case(w);
    let tx = |t| Some(StatementInfo::control(Some(t), S::None));
    let session = |s| Some(StatementInfo::control(None, s));
    if h("XA") {
        // XA START/BEGIN opens a transaction on the session; XA END and XA PREPARE leave it
        // bound to it until XA COMMIT or XA ROLLBACK
        return if rest.is(0, "START") || rest.is(0, "BEGIN") {
            tx(TxControl::Begin)
        } else if rest.is(0, "COMMIT") {
            tx(TxControl::Commit)
        } else if rest.is(0, "ROLLBACK") {
            tx(TxControl::Rollback)
        } else {
            tx(TxControl::Savepoint)
        };
    }
    if h("LOAD") {
        // LOAD DATA / LOAD XML write rows (PostgreSQL's LOAD loads a library)
        return Some(StatementInfo::WRITE);
    }
    if h("HANDLER") {
        // an open handler is a cursor of the session
        return session(S::Held);
    }
    if h("LOCK") && (rest.is(0, "TABLES") || rest.is(0, "TABLE")) {
        // the session holds table locks: its reads must stay on it
        return Some(StatementInfo {
            session: S::Other,
            ..StatementInfo::WRITE
        });
    }
    if h("UNLOCK") {
        return session(S::None);
    }
    if h("SET") && rest.autocommit {
        // with autocommit off a transaction is always open, and COMMIT opens the next one;
        // a value that does not read as on counts as off (the session stays on the primary
        // either way)
        let tx = if rest.autocommit_on == Some(true) {
            TxControl::AutocommitOn
        } else {
            TxControl::AutocommitOff
        };
        return Some(StatementInfo::control(Some(tx), S::Other));
    }
    None
}
