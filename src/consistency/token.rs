//! Consistency tokens: "whoever holds me must see at least these writes".

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A replication position: a PostgreSQL WAL LSN as a byte offset (`0/3023E98` is `0x3023E98`).
pub type Position = u64;

/// What a reader must see, per database: `{database -> position}`.
///
/// Take one with [`Cluster::token`](crate::Cluster::token) after a request or job wrote (or
/// read), store it in a job payload, a cookie or a header, and run the next unit of work under
/// it with [`Cluster::with_token`](crate::Cluster::with_token): every read inside sees at least
/// those writes.
///
/// It prints as one short URL-safe string (`default-3023e98.users_0-1a2b3c`), parses back with
/// [`FromStr`], and serialises as that string with serde. Tokens [`merge`](Self::merge) by
/// keeping the larger position per database. With `granularity = "table"` a token may also
/// name tables (`default~posts-3023e98`): such an entry holds back only reads of that table.
///
/// ```
/// use diesel_sharding::ConsistencyToken;
///
/// let mut token: ConsistencyToken = "default-3023e98".parse()?;
/// token.merge(&"default-10.users-ff".parse()?);
/// assert_eq!(token.to_string(), "default-3023e98.users-ff");
/// assert_eq!(token.position("users"), Some(0xff));
/// assert!("default-zz".parse::<ConsistencyToken>().is_err());
/// # Ok::<(), diesel_sharding::TokenError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsistencyToken {
    /// `(database, table or "" for the whole database)` -> position.
    positions: BTreeMap<(String, String), Position>,
}

/// A string that is not a [`ConsistencyToken`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed consistency token at `{part}`: {problem}")]
pub struct TokenError {
    part: String,
    problem: &'static str,
}

impl ConsistencyToken {
    /// A token that requires nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Does it require nothing?
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The highest position required on `database` (for any of its tables), if any.
    pub fn position(&self, database: &str) -> Option<Position> {
        self.positions
            .iter()
            .filter(|((db, _), _)| db == database)
            .map(|(_, p)| *p)
            .max()
    }

    /// The highest position per database, in name order.
    pub fn positions(&self) -> impl Iterator<Item = (&str, Position)> {
        let mut out: Vec<(&str, Position)> = Vec::new();
        for ((db, _), p) in &self.positions {
            match out.last_mut() {
                Some((last, q)) if *last == db.as_str() => *q = (*q).max(*p),
                _ => out.push((db.as_str(), *p)),
            }
        }
        out.into_iter()
    }

    /// Every entry: `(database, table or None for the whole database, position)`.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&str>, Position)> {
        self.positions
            .iter()
            .map(|((db, t), p)| (db.as_str(), (!t.is_empty()).then_some(t.as_str()), *p))
    }

    /// Requires `position` on `database` (keeping the larger of the two).
    pub fn require(&mut self, database: impl Into<String>, position: Position) {
        self.require_entry(database.into(), String::new(), position);
    }

    /// Requires `position` for reads of `table` on `database`.
    pub fn require_table(
        &mut self,
        database: impl Into<String>,
        table: impl Into<String>,
        position: Position,
    ) {
        self.require_entry(database.into(), table.into(), position);
    }

    fn require_entry(&mut self, database: String, table: String, position: Position) {
        let entry = self.positions.entry((database, table)).or_insert(0);
        *entry = (*entry).max(position);
    }

    /// Merges `other` in: the larger position per entry.
    pub fn merge(&mut self, other: &ConsistencyToken) {
        for ((db, t), pos) in &other.positions {
            self.require_entry(db.clone(), t.clone(), *pos);
        }
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    for b in name.bytes() {
        if plain(b) {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

/// Characters a database name keeps as they are; others are `%XX`-escaped.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ((db, table), pos)) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write_escaped(f, db)?;
            if !table.is_empty() {
                f.write_str("~")?;
                write_escaped(f, table)?;
            }
            write!(f, "-{pos:x}")?;
        }
        Ok(())
    }
}

impl FromStr for ConsistencyToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut token = ConsistencyToken::new();
        if s.is_empty() {
            return Ok(token);
        }
        if s.len() > 4096 {
            return Err(TokenError {
                part: s.chars().take(16).collect(),
                problem: "longer than 4096 bytes",
            });
        }
        for part in s.split('.') {
            let bad = |problem| TokenError {
                part: part.to_owned(),
                problem,
            };
            let (name, pos) = part
                .rsplit_once('-')
                .ok_or_else(|| bad("expected `<database>-<hex position>`"))?;
            if pos.is_empty() || pos.len() > 16 || !pos.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("the position is not a hex number of at most 16 digits"));
            }
            let pos = u64::from_str_radix(pos, 16)
                .map_err(|_| bad("the position is not a hex number"))?;
            let (db, table) = name.split_once('~').unwrap_or((name, ""));
            let db = unescape(db).ok_or_else(|| bad("the database name is badly escaped"))?;
            let table = unescape(table).ok_or_else(|| bad("the table name is badly escaped"))?;
            if db.is_empty() {
                return Err(bad("the database name is empty"));
            }
            if name.contains('~') && table.is_empty() {
                return Err(bad("the table name is empty"));
            }
            token.require_entry(db, table, pos);
        }
        Ok(token)
    }
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

impl serde::Serialize for ConsistencyToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ConsistencyToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_string() {
        let mut t = ConsistencyToken::new();
        t.require("default", 0x3023E98);
        t.require("users.eu-1", 7);
        let s = t.to_string();
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._%".contains(&b)),
            "{s}"
        );
        assert_eq!(s.parse::<ConsistencyToken>().unwrap(), t);
    }

    #[test]
    fn table_entries_round_trip_and_count_for_their_database() {
        let mut t = ConsistencyToken::new();
        t.require("default", 5);
        t.require_table("default", "posts", 9);
        let s = t.to_string();
        assert_eq!(s, "default-5.default~posts-9");
        assert_eq!(s.parse::<ConsistencyToken>().unwrap(), t);
        assert_eq!(t.position("default"), Some(9));
        assert_eq!(t.positions().collect::<Vec<_>>(), vec![("default", 9)]);
        assert!("default~-9".parse::<ConsistencyToken>().is_err());
    }

    #[test]
    fn an_empty_token_is_the_empty_string() {
        assert_eq!(ConsistencyToken::new().to_string(), "");
        assert!("".parse::<ConsistencyToken>().unwrap().is_empty());
    }

    #[test]
    fn merging_keeps_the_larger_position() {
        let mut a: ConsistencyToken = "a-10.b-5".parse().unwrap();
        a.merge(&"a-3.b-50.c-1".parse().unwrap());
        assert_eq!(a.to_string(), "a-10.b-50.c-1");
    }

    #[test]
    fn malformed_strings_are_errors_not_panics() {
        for bad in [
            "x",
            "-10",
            "a-",
            "a-xyz",
            "a-10.",
            ".a-10",
            "a%zz-1",
            "a%4-1",
            "a b-1",
            "a-11111111111111111",
            "é-1",
            "a-10..b-2",
            "%FF%FE-1",
        ] {
            let e = bad.parse::<ConsistencyToken>().unwrap_err();
            assert!(
                e.to_string().contains("malformed consistency token"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Job {
            token: ConsistencyToken,
        }
        let job = Job {
            token: "default-ff".parse().unwrap(),
        };
        let text = toml::to_string(&job).unwrap();
        assert_eq!(text.trim(), "token = \"default-ff\"");
        assert_eq!(toml::from_str::<Job>(&text).unwrap(), job);
        assert!(toml::from_str::<Job>("token = \"nope\"").is_err());
    }
}
