//! Replication positions: how far a server has come in its primary's history.
//!
//! PostgreSQL numbers its history with one counter (the WAL LSN): positions are totally
//! ordered. MySQL and MariaDB name transactions by GTID: a position is a *set* (per MariaDB
//! replication domain the last sequence number; per MySQL source server the transaction
//! numbers applied), and two positions may be incomparable. [`Position`] holds either, with
//! the partial order "has everything the other has" ([`Position::covers`]).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::RwLock;

/// A replication position: an LSN (PostgreSQL) or a GTID set (MySQL, MariaDB).
///
/// Positions are partially ordered: `a >= b` when `a` [covers](Self::covers) `b`, that is a
/// server at `a` has applied every transaction a server at `b` had. LSNs always compare;
/// GTID sets compare per domain (MariaDB) or per source server (MySQL), and positions of
/// different kinds never do.
///
/// ```
/// use diesel_sharding::Position;
///
/// let lsn: Position = "0/3023E98".parse()?;
/// assert_eq!(lsn, Position::Lsn(0x3023E98));
/// assert!(lsn > Position::Lsn(0x3000000));
///
/// // MariaDB: `domain-server-sequence` per domain
/// let a: Position = "0-1-42,1-2-7".parse()?;
/// let b: Position = "0-1-40".parse()?;
/// assert!(a.covers(&b) && a > b);
/// let c: Position = "0-1-50,1-2-3".parse()?;
/// assert_eq!(a.partial_cmp(&c), None, "each is ahead in one domain");
/// assert_eq!(a.join(&c).unwrap().to_string(), "0-1-50,1-2-7");
///
/// // MySQL: transaction numbers per source server
/// let m: Position = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18".parse()?;
/// assert!(m.covers(&"3e11fa47-71ca-11e1-9e33-c80aa9429562:2-4".parse()?));
/// assert!(!m.covers(&"3e11fa47-71ca-11e1-9e33-c80aa9429562:6".parse()?));
/// # Ok::<(), diesel_sharding::PositionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Position {
    /// A PostgreSQL WAL location as a byte offset (`0/3023E98` is `0x3023E98`).
    Lsn(u64),
    /// A MySQL or MariaDB GTID set.
    Gtid(GtidSet),
}

/// A string that is not a [`Position`] or [`GtidSet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed replication position `{text}`: {problem}")]
pub struct PositionError {
    text: String,
    problem: &'static str,
}

impl PositionError {
    fn new(text: &str, problem: &'static str) -> Self {
        PositionError {
            text: text.chars().take(64).collect(),
            problem,
        }
    }
}

impl Position {
    /// Has a server at `self` applied everything a server at `other` had?
    pub fn covers(&self, other: &Position) -> bool {
        match (self, other) {
            (Position::Lsn(a), Position::Lsn(b)) => a >= b,
            (Position::Gtid(a), Position::Gtid(b)) => a.covers(b),
            (_, Position::Gtid(b)) => b.is_empty(),
            (Position::Gtid(_), Position::Lsn(_)) => false,
        }
    }

    /// The least position that covers both, or `None` for positions of different kinds
    /// (an LSN and a GTID set, or a MariaDB and a MySQL set).
    pub fn join(&self, other: &Position) -> Option<Position> {
        match (self, other) {
            (Position::Lsn(a), Position::Lsn(b)) => Some(Position::Lsn(*a.max(b))),
            (Position::Gtid(a), Position::Gtid(b)) => a.join(b).map(Position::Gtid),
            (p, Position::Gtid(g)) | (Position::Gtid(g), p) if g.is_empty() => Some(p.clone()),
            _ => None,
        }
    }

    /// The LSN, for a PostgreSQL position.
    pub fn as_lsn(&self) -> Option<u64> {
        match self {
            Position::Lsn(lsn) => Some(*lsn),
            Position::Gtid(_) => None,
        }
    }

    /// Raises `self` to cover `other` too. Positions of different kinds do not combine: the
    /// newer fact (`other`) replaces the older.
    pub(crate) fn raise(&mut self, other: &Position) {
        match (&mut *self, other) {
            (Position::Lsn(a), Position::Lsn(b)) => *a = (*a).max(*b),
            _ => *self = self.join(other).unwrap_or_else(|| other.clone()),
        }
    }

    /// Lowers `self` to what `limit` has (`limit` is what the primary has reached: nothing
    /// beyond it can be real). Positions of different kinds are left as they are.
    pub(crate) fn clamp_to(&mut self, limit: &Position) {
        match (&mut *self, limit) {
            (Position::Lsn(a), Position::Lsn(b)) => *a = (*a).min(*b),
            (Position::Gtid(a), Position::Gtid(b)) => a.clamp_to(b),
            _ => {}
        }
    }

    /// How many bytes of history `self` (a primary) is ahead of `replica`, where the backend
    /// counts history in bytes (PostgreSQL).
    pub(crate) fn bytes_ahead_of(&self, replica: &Position) -> Option<u64> {
        match (self, replica) {
            (Position::Lsn(a), Position::Lsn(b)) => Some(a.saturating_sub(*b)),
            _ => None,
        }
    }

    /// The compact form tokens carry: hex for an LSN (as version 1 tokens), a GTID set in
    /// [`GtidSet::write_compact`]'s form.
    pub(crate) fn write_compact(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            Position::Lsn(lsn) => write!(out, "{lsn:x}"),
            Position::Gtid(set) => set.write_compact(out),
        }
    }

    /// Parses [`write_compact`](Self::write_compact)'s form.
    pub(crate) fn parse_compact(text: &str) -> Result<Position, &'static str> {
        match text.as_bytes().first() {
            Some(b'm' | b's') => GtidSet::parse_compact(text).map(Position::Gtid),
            _ => {
                if text.is_empty()
                    || text.len() > 16
                    || !text.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err("the position is not a hex number of at most 16 digits");
                }
                u64::from_str_radix(text, 16)
                    .map(Position::Lsn)
                    .map_err(|_| "the position is not a hex number")
            }
        }
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Position::Lsn(a), Position::Lsn(b)) => Some(a.cmp(b)),
            _ => match (self.covers(other), other.covers(self)) {
                (true, true) => Some(Ordering::Equal),
                (true, false) => Some(Ordering::Greater),
                (false, true) => Some(Ordering::Less),
                (false, false) => None,
            },
        }
    }
}

impl fmt::Display for Position {
    /// As the server shows it: `0/3023E98`, `0-1-42,1-2-7`, `uuid:1-5:11-18`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Lsn(lsn) => write!(f, "{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
            Position::Gtid(set) => set.fmt(f),
        }
    }
}

impl FromStr for Position {
    type Err = PositionError;

    /// The server's own spelling: a PostgreSQL LSN (`0/3023E98`), a MariaDB GTID list
    /// (`0-1-42,1-2-7`) or a MySQL GTID set (`uuid:1-5:11-18,uuid:1-3`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some((hi, lo)) = t.split_once('/') {
            let part = |p: &str| {
                (!p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| u64::from_str_radix(p, 16).ok())
                    .flatten()
                    .ok_or_else(|| PositionError::new(s, "an LSN is two hex numbers: `0/3023E98`"))
            };
            return Ok(Position::Lsn((part(hi)? << 32) | part(lo)?));
        }
        t.parse().map(Position::Gtid)
    }
}

/// A MySQL or MariaDB GTID set: what a server has applied, named by transaction.
///
/// MariaDB (`0-1-42,1-2-7`): per replication domain, the last applied transaction as
/// `domain-server-sequence`; within a domain sequence numbers only grow, so one set covers
/// another when it is at least as far in every domain of the other. MySQL
/// (`3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18`): per source server, the transaction
/// numbers applied, as intervals; one set covers another when it holds all of its
/// transactions. Tagged GTIDs (MySQL 8.3) are not supported.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GtidSet(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// MariaDB: `(domain, server, sequence)`, one per domain, sorted by domain.
    Domains(Vec<(u32, u32, u64)>),
    /// MySQL: per source UUID, sorted disjoint non-adjacent inclusive intervals.
    Sources(Vec<Source>),
}

/// How a set is spelled: the separators between MariaDB domains, between MySQL sources,
/// between a MariaDB GTID's fields,
/// before a MySQL interval and inside it, and whether UUIDs have their dashes.
struct Spelling {
    members: char,
    sources: char,
    fields: char,
    interval: char,
    range: char,
    uuid_dashes: bool,
}

/// The servers' spelling: `0-1-42,1-2-7`, `3e11fa47-71ca-..:1-5:11-18`.
const SERVER: Spelling = Spelling {
    members: ',',
    sources: ',',
    fields: '-',
    interval: ':',
    range: '-',
    uuid_dashes: true,
};

/// The compact, URL-safe spelling tokens carry (no `-` or `.`): `0_1_42_1_2_7`,
/// `3e11fa4771ca..62_1x5_11x18`, sources separated by `~`.
const COMPACT: Spelling = Spelling {
    members: '_',
    sources: '~',
    fields: '_',
    interval: '_',
    range: 'x',
    uuid_dashes: false,
};

/// A MySQL source server's UUID and the intervals of its transactions.
type Source = ([u8; 16], Vec<(u64, u64)>);

impl Default for Repr {
    fn default() -> Self {
        Repr::Domains(Vec::new())
    }
}

/// The most domains or source servers a set may name (sets are untrusted input in tokens).
const MAX_MEMBERS: usize = 64;
/// The most intervals per MySQL source server.
const MAX_INTERVALS: usize = 64;

impl GtidSet {
    /// Does it name no transaction at all?
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Repr::Domains(d) => d.is_empty(),
            Repr::Sources(s) => s.is_empty(),
        }
    }

    /// Is it a MariaDB set (per domain), not a MySQL one (per source server)?
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) fn is_mariadb(&self) -> bool {
        matches!(self.0, Repr::Domains(_))
    }

    /// Does it hold every transaction `other` holds?
    pub fn covers(&self, other: &GtidSet) -> bool {
        if other.is_empty() {
            return true;
        }
        match (&self.0, &other.0) {
            (Repr::Domains(a), Repr::Domains(b)) => b.iter().all(|(d, _, n)| {
                a.binary_search_by_key(d, |e| e.0)
                    .is_ok_and(|i| a[i].2 >= *n)
            }),
            (Repr::Sources(a), Repr::Sources(b)) => b.iter().all(|(uuid, ivs)| {
                a.binary_search_by_key(uuid, |e| e.0)
                    .is_ok_and(|i| intervals_cover(&a[i].1, ivs))
            }),
            _ => false,
        }
    }

    /// The union: `None` when one is a MariaDB set and the other a MySQL set.
    pub fn join(&self, other: &GtidSet) -> Option<GtidSet> {
        if other.is_empty() {
            return Some(self.clone());
        }
        if self.is_empty() {
            return Some(other.clone());
        }
        match (&self.0, &other.0) {
            (Repr::Domains(a), Repr::Domains(b)) => {
                let mut out = a.clone();
                for &(d, s, n) in b {
                    match out.binary_search_by_key(&d, |e| e.0) {
                        Ok(i) if out[i].2 < n => out[i] = (d, s, n),
                        Ok(_) => {}
                        Err(i) => out.insert(i, (d, s, n)),
                    }
                }
                Some(GtidSet(Repr::Domains(out)))
            }
            (Repr::Sources(a), Repr::Sources(b)) => {
                let mut out = a.clone();
                for (uuid, ivs) in b {
                    match out.binary_search_by_key(uuid, |e| e.0) {
                        Ok(i) => out[i].1 = union(&out[i].1, ivs),
                        Err(i) => out.insert(i, (*uuid, ivs.clone())),
                    }
                }
                Some(GtidSet(Repr::Sources(out)))
            }
            _ => None,
        }
    }

    /// Keeps only what `limit` has too (per domain the smaller sequence; per source the
    /// common transactions).
    fn clamp_to(&mut self, limit: &GtidSet) {
        match (&mut self.0, &limit.0) {
            (Repr::Domains(a), Repr::Domains(b)) => {
                a.retain_mut(|(d, s, n)| match b.binary_search_by_key(d, |e| e.0) {
                    Ok(i) => {
                        if b[i].2 < *n {
                            *s = b[i].1;
                            *n = b[i].2;
                        }
                        true
                    }
                    Err(_) => false,
                });
            }
            (Repr::Sources(a), Repr::Sources(b)) => {
                a.retain_mut(|(uuid, ivs)| match b.binary_search_by_key(uuid, |e| e.0) {
                    Ok(i) => {
                        *ivs = intersection(ivs, &b[i].1);
                        !ivs.is_empty()
                    }
                    Err(_) => false,
                });
            }
            _ => return,
        }
        if self.is_empty() {
            self.0 = Repr::default();
        }
    }

    /// The form a token carries (URL-safe, no `-` or `.`): MariaDB `m` and the decimal
    /// triples joined by `_` (`m0_1_42_1_2_7`); MySQL `s`, then per source its UUID in 32
    /// hex digits and its intervals (`1x5`, or `7` alone) joined by `_`, sources separated
    /// by `~` (`s3e11..62_1x5_11x18`).
    fn write_compact(&self, out: &mut impl fmt::Write) -> fmt::Result {
        out.write_char(match self.0 {
            Repr::Domains(_) => 'm',
            Repr::Sources(_) => 's',
        })?;
        self.write_as(out, &COMPACT)
    }

    /// Writes the members in `spelling`.
    fn write_as(&self, out: &mut impl fmt::Write, spelling: &Spelling) -> fmt::Result {
        let sep = |out: &mut dyn fmt::Write, i: usize, sep: char| match i {
            0 => Ok(()),
            _ => out.write_char(sep),
        };
        match &self.0 {
            Repr::Domains(domains) => {
                for (i, (d, s, n)) in domains.iter().enumerate() {
                    sep(out, i, spelling.members)?;
                    let f = spelling.fields;
                    write!(out, "{d}{f}{s}{f}{n}")?;
                }
            }
            Repr::Sources(sources) => {
                for (i, (uuid, ivs)) in sources.iter().enumerate() {
                    sep(out, i, spelling.sources)?;
                    for (k, b) in uuid.iter().enumerate() {
                        if spelling.uuid_dashes && matches!(k, 4 | 6 | 8 | 10) {
                            out.write_char('-')?;
                        }
                        write!(out, "{b:02x}")?;
                    }
                    for (a, b) in ivs {
                        out.write_char(spelling.interval)?;
                        write!(out, "{a}")?;
                        if a != b {
                            write!(out, "{}{b}", spelling.range)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn parse_compact(text: &str) -> Result<GtidSet, &'static str> {
        let number = |t: &str| -> Result<u64, &'static str> {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err("a GTID number is not a decimal number");
            }
            t.parse().map_err(|_| "a GTID number is too large")
        };
        if let Some(rest) = text.strip_prefix('m') {
            if rest.is_empty() {
                return Ok(GtidSet::default());
            }
            let parts: Vec<&str> = rest.split('_').collect();
            if parts.len() % 3 != 0 || parts.len() > 3 * MAX_MEMBERS {
                return Err("a MariaDB GTID is `domain_server_sequence`");
            }
            let mut list = Vec::new();
            for t in parts.chunks(3) {
                let small =
                    |x: u64| u32::try_from(x).map_err(|_| "a GTID domain or server is too large");
                list.push((small(number(t[0])?)?, small(number(t[1])?)?, number(t[2])?));
            }
            return domains(list);
        }
        let rest = text.strip_prefix('s').ok_or("not a GTID set")?;
        if rest.is_empty() {
            return Ok(GtidSet::default());
        }
        let mut sources = Vec::new();
        for source in rest.split('~') {
            let mut items = source.split('_');
            let uuid = parse_uuid(items.next().unwrap_or(""))?;
            let mut ivs = Vec::new();
            for iv in items {
                let (a, b) = iv.split_once('x').unwrap_or((iv, iv));
                ivs.push((number(a)?, number(b)?));
            }
            sources.push((uuid, ivs));
        }
        self::sources(sources)
    }
}

/// A MariaDB set from `(domain, server, sequence)` triples: one per domain.
fn domains(mut list: Vec<(u32, u32, u64)>) -> Result<GtidSet, &'static str> {
    if list.len() > MAX_MEMBERS {
        return Err("more than 64 GTID domains");
    }
    list.sort_by_key(|e| e.0);
    if list.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("a GTID domain appears twice");
    }
    Ok(GtidSet(Repr::Domains(list)))
}

/// A MySQL set from per-source interval lists, normalised.
fn sources(list: Vec<Source>) -> Result<GtidSet, &'static str> {
    if list.len() > MAX_MEMBERS {
        return Err("more than 64 GTID source servers");
    }
    let mut out: Vec<Source> = Vec::new();
    for (uuid, ivs) in list {
        if ivs.is_empty() {
            return Err("a GTID source server has no transaction interval");
        }
        if ivs.len() > MAX_INTERVALS {
            return Err("more than 64 intervals for one GTID source server");
        }
        if ivs.iter().any(|(a, b)| *a == 0 || a > b) {
            return Err("a GTID interval is empty or starts at 0");
        }
        let ivs = union(&[], &ivs);
        match out.binary_search_by_key(&uuid, |e| e.0) {
            Ok(i) => out[i].1 = union(&out[i].1, &ivs),
            Err(i) => out.insert(i, (uuid, ivs)),
        }
    }
    Ok(GtidSet(Repr::Sources(out)))
}

fn parse_uuid(text: &str) -> Result<[u8; 16], &'static str> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err("a GTID source is not a UUID");
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2]).map_err(|_| "not a UUID")?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| "a GTID source is not a UUID")?;
    }
    Ok(out)
}

/// Sorted, merged union of two interval lists (inclusive, adjacent ones joined).
fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (s, e) in all {
        match out.last_mut() {
            Some((_, last)) if s <= last.saturating_add(1) => *last = (*last).max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn intersection(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s1, e1) in a {
        for &(s2, e2) in b {
            let (s, e) = (s1.max(s2), e1.min(e2));
            if s <= e {
                out.push((s, e));
            }
        }
    }
    union(&[], &out)
}

/// Does the (normalised) interval list `have` hold every number of `need`?
fn intervals_cover(have: &[(u64, u64)], need: &[(u64, u64)]) -> bool {
    need.iter()
        .all(|&(s, e)| have.iter().any(|&(hs, he)| hs <= s && e <= he))
}

impl fmt::Display for GtidSet {
    /// As the server shows it: `0-1-42,1-2-7` or `3e11fa47-..-c80aa9429562:1-5:11-18`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_as(f, &SERVER)
    }
}

impl FromStr for GtidSet {
    type Err = PositionError;

    /// MariaDB's `@@gtid_slave_pos` / `@@last_gtid` spelling (`0-1-42,1-2-7`) or MySQL's
    /// `@@gtid_executed` (`uuid:1-5:11-18,uuid:1-3`, line breaks allowed); empty is the
    /// empty set.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem| PositionError::new(s, problem);
        let members: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        if members.is_empty() {
            return Ok(GtidSet::default());
        }
        if members.len() > MAX_MEMBERS {
            return Err(bad("more than 64 domains or source servers"));
        }
        let number = |t: &str| -> Result<u64, PositionError> {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("a GTID number is not a decimal number"));
            }
            t.parse().map_err(|_| bad("a GTID number is too large"))
        };
        if members.iter().any(|m| m.contains(':')) {
            let mut list = Vec::new();
            for m in members {
                let mut parts = m.split(':');
                let uuid = parse_uuid(parts.next().unwrap_or("")).map_err(bad)?;
                let mut ivs = Vec::new();
                for iv in parts {
                    if iv.bytes().next().is_some_and(|b| !b.is_ascii_digit()) {
                        return Err(bad("tagged GTIDs (MySQL 8.3) are not supported"));
                    }
                    let (a, b) = iv.split_once('-').unwrap_or((iv, iv));
                    ivs.push((number(a)?, number(b)?));
                }
                list.push((uuid, ivs));
            }
            return sources(list).map_err(bad);
        }
        let mut list = Vec::new();
        for m in members {
            let t: Vec<&str> = m.split('-').collect();
            if t.len() != 3 {
                return Err(bad("a MariaDB GTID is `domain-server-sequence`"));
            }
            let small =
                |x: u64| u32::try_from(x).map_err(|_| bad("a GTID domain or server is too large"));
            list.push((small(number(t[0])?)?, small(number(t[1])?)?, number(t[2])?));
        }
        domains(list).map_err(bad)
    }
}

/// A position shared between threads: an atomic for LSNs (every routed read looks at
/// one), a lock for GTID sets.
#[derive(Debug, Default)]
pub(crate) struct PositionCell {
    /// The LSN (0: none).
    lsn: AtomicU64,
    /// A position of another kind, once one was stored.
    other: RwLock<Option<Position>>,
    has_other: AtomicBool,
}

impl PositionCell {
    /// The position held, if any.
    pub(crate) fn get(&self) -> Option<Position> {
        if self.has_other.load(Relaxed) {
            return self.other.read().ok().and_then(|p| p.clone());
        }
        match self.lsn.load(Relaxed) {
            0 => None,
            lsn => Some(Position::Lsn(lsn)),
        }
    }

    /// Does the position held cover `need`?
    pub(crate) fn covers(&self, need: &Position) -> bool {
        match need {
            Position::Lsn(n) if !self.has_other.load(Relaxed) => self.lsn.load(Relaxed) >= *n,
            _ => self.get().is_some_and(|p| p.covers(need)),
        }
    }

    /// Raises the position held to cover `p` too.
    pub(crate) fn raise(&self, p: &Position) {
        match p {
            Position::Lsn(lsn) if !self.has_other.load(Relaxed) => {
                self.lsn.fetch_max(*lsn, Relaxed);
            }
            _ => {
                if let Ok(mut other) = self.other.write() {
                    if !self.has_other.load(Relaxed) {
                        *other = self.get_lsn();
                    }
                    match &mut *other {
                        Some(o) => o.raise(p),
                        None => *other = Some(p.clone()),
                    }
                    self.has_other.store(true, Relaxed);
                }
            }
        }
    }

    /// Replaces the position held (a server that started over).
    pub(crate) fn set(&self, p: &Position) {
        match p {
            Position::Lsn(lsn) if !self.has_other.load(Relaxed) => self.lsn.store(*lsn, Relaxed),
            _ => {
                if let Ok(mut other) = self.other.write() {
                    *other = Some(p.clone());
                    self.has_other.store(true, Relaxed);
                }
            }
        }
    }

    /// Forgets the position held (it belonged to another history).
    pub(crate) fn clear(&self) {
        if let Ok(mut other) = self.other.write() {
            *other = None;
            self.lsn.store(0, Relaxed);
        }
    }

    /// How many bytes of history the position held trails `primary`, where the backend
    /// counts bytes (an LSN; none held counts as 0).
    pub(crate) fn bytes_behind(&self, primary: &Position) -> Option<u64> {
        match primary {
            Position::Lsn(p) if !self.has_other.load(Relaxed) => {
                Some(p.saturating_sub(self.lsn.load(Relaxed)))
            }
            _ => self.get().and_then(|r| primary.bytes_ahead_of(&r)),
        }
    }

    fn get_lsn(&self) -> Option<Position> {
        match self.lsn.load(Relaxed) {
            0 => None,
            lsn => Some(Position::Lsn(lsn)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Position {
        s.parse().unwrap()
    }

    #[test]
    fn lsns_parse_print_and_order_like_postgres() {
        assert_eq!(p("0/3023E98"), Position::Lsn(0x3023E98));
        assert_eq!(p("16/B374D848"), Position::Lsn(0x16_B374_D848));
        assert_eq!(Position::Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert!(p("1/0") > p("0/FFFFFFFF"));
        for bad in ["0/", "/1", "0/123456789", "x/1", "0/1/2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mariadb_sets_compare_per_domain() {
        let a = p("0-1-42,1-2-7");
        assert!(a.covers(&p("0-1-42")));
        assert!(
            a.covers(&p("0-3-41")),
            "the server id does not matter within a domain"
        );
        assert!(!a.covers(&p("0-1-43")));
        assert!(!a.covers(&p("2-1-1")), "a domain it has never seen");
        assert!(a.covers(&p("")), "the empty set");
        assert_eq!(a.partial_cmp(&p("0-1-50")), None);
        assert_eq!(p("0-1-5").partial_cmp(&p("0-1-5")), Some(Ordering::Equal));
        assert_eq!(p(" 1-2-7 ,0-1-42 "), a, "order and spaces do not matter");
        assert_eq!(a.to_string(), "0-1-42,1-2-7");
        for bad in ["0-1", "0-1-x", "0-1-2-3", "0-1-1,0-2-2", "4294967296-1-1"] {
            assert!(bad.parse::<GtidSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mysql_sets_compare_by_transactions() {
        let u1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let u2 = "4e11fa47-71ca-11e1-9e33-c80aa9429562";
        // as `SELECT @@gtid_executed` prints it, line break included
        let a = p(&format!("{u1}:1-5:11-18,\n{u2}:1-3"));
        assert!(a.covers(&p(&format!("{u1}:3-5:12"))));
        assert!(!a.covers(&p(&format!("{u1}:5-11"))), "6-10 are missing");
        assert!(!a.covers(&p(&format!("{u2}:4"))));
        assert_eq!(
            p(&format!("{u1}:1-3:4-5:5")).to_string(),
            format!("{u1}:1-5"),
            "intervals are merged"
        );
        assert_eq!(
            p(&format!("{}:1", u1.to_uppercase())),
            p(&format!("{u1}:1"))
        );
        let j = a.join(&p(&format!("{u1}:6-10"))).unwrap();
        assert_eq!(j.to_string(), format!("{u1}:1-18,{u2}:1-3"));
        for bad in [
            u1.to_string(),
            format!("{u1}:0"),
            format!("{u1}:5-3"),
            format!("{u1}:tag:1-5"),
            "abc:1".to_owned(),
        ] {
            assert!(bad.parse::<GtidSet>().is_err(), "{bad}");
        }
        assert!(
            a.partial_cmp(&p("0-1-1")).is_none(),
            "MySQL and MariaDB sets never compare"
        );
        assert!(a.join(&p("0-1-1")).is_none());
    }

    #[test]
    fn kinds_do_not_mix() {
        let lsn = p("0/10");
        let gtid = p("0-1-1");
        assert!(!lsn.covers(&gtid) && !gtid.covers(&lsn));
        assert_eq!(lsn.partial_cmp(&gtid), None);
        assert_eq!(lsn.join(&gtid), None);
        let mut raised = lsn.clone();
        raised.raise(&gtid);
        assert_eq!(raised, gtid, "the newer fact replaces one of another kind");
        assert!(lsn.covers(&Position::Gtid(GtidSet::default())));
    }

    #[test]
    fn clamping_keeps_what_the_limit_has() {
        let mut a = p("0-1-42,1-2-7");
        a.clamp_to(&p("0-1-40"));
        assert_eq!(a, p("0-1-40"));
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut m = p(&format!("{u}:1-20"));
        m.clamp_to(&p(&format!("{u}:1-5:8-9")));
        assert_eq!(m, p(&format!("{u}:1-5:8-9")));
        let mut l = p("0/100");
        l.clamp_to(&p("0/50"));
        assert_eq!(l, p("0/50"));
    }

    #[test]
    fn a_shared_cell_holds_either_kind() {
        let cell = PositionCell::default();
        assert_eq!(cell.get(), None);
        assert!(!cell.covers(&p("0/1")));
        cell.raise(&p("0/10"));
        cell.raise(&p("0/5"));
        assert_eq!(cell.get(), Some(p("0/10")));
        assert!(cell.covers(&p("0/10")) && !cell.covers(&p("0/11")));
        cell.set(&p("0/3"));
        assert_eq!(cell.get(), Some(p("0/3")), "set replaces, also downwards");
        let gtid = PositionCell::default();
        gtid.raise(&p("0-1-5"));
        gtid.raise(&p("1-1-2"));
        assert_eq!(gtid.get(), Some(p("0-1-5,1-1-2")));
        assert!(gtid.covers(&p("0-1-4")) && !gtid.covers(&p("0-1-6")));
        assert!(!gtid.covers(&p("0/1")));
        gtid.set(&p("0-1-1"));
        assert_eq!(gtid.get(), Some(p("0-1-1")));
    }

    #[test]
    fn the_compact_form_round_trips() {
        for text in [
            "0/3023E98",
            "0-1-42,1-2-7",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18,4e11fa47-71ca-11e1-9e33-c80aa9429562:7",
        ] {
            let pos = p(text);
            let mut compact = String::new();
            pos.write_compact(&mut compact).unwrap();
            assert!(
                compact
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'~'),
                "{compact}"
            );
            assert_eq!(Position::parse_compact(&compact).unwrap(), pos, "{compact}");
        }
        for bad in [
            "",
            "m0_1",
            "mx_1_2",
            "s12",
            "s3e11fa4771ca11e19e33c80aa9429562",
            "g1",
        ] {
            assert!(Position::parse_compact(bad).is_err(), "{bad}");
        }
    }
}
