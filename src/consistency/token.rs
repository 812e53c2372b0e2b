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
/// keeping the larger position per database.
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
    positions: BTreeMap<String, Position>,
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

    /// The position required on `database`, if any.
    pub fn position(&self, database: &str) -> Option<Position> {
        self.positions.get(database).copied()
    }

    /// Every `(database, position)`, in name order.
    pub fn positions(&self) -> impl Iterator<Item = (&str, Position)> {
        self.positions.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Requires `position` on `database` (keeping the larger of the two).
    pub fn require(&mut self, database: impl Into<String>, position: Position) {
        let entry = self.positions.entry(database.into()).or_insert(0);
        *entry = (*entry).max(position);
    }

    /// Merges `other` in: the larger position per database.
    pub fn merge(&mut self, other: &ConsistencyToken) {
        for (db, pos) in &other.positions {
            self.require(db.clone(), *pos);
        }
    }
}

/// Characters a database name keeps as they are; others are `%XX`-escaped.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (db, pos)) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            for b in db.bytes() {
                if plain(b) {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "%{b:02X}")?;
                }
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
            let name = unescape(name).ok_or_else(|| bad("the database name is badly escaped"))?;
            if name.is_empty() {
                return Err(bad("the database name is empty"));
            }
            token.require(name, pos);
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
