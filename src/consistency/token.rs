//! Consistency tokens: "whoever holds me must see at least these writes".

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::Position;

/// What a reader must see, per database: `{database -> position}`.
///
/// Take one with [`Cluster::token`](crate::Cluster::token) after a request or job wrote (or
/// read), store it in a job payload, a cookie or a header, and run the next unit of work under
/// it with [`Cluster::with_token`](crate::Cluster::with_token): every read inside sees at least
/// those writes.
///
/// It prints as one short URL-safe string (`default-3023e98.users_0-1a2b3c`), parses back with
/// [`FromStr`], and serialises as that string with serde. Tokens [`merge`](Self::merge) by
/// keeping, per database, the least position that covers both. With `granularity = "table"`
/// a token may also name tables (`default~posts-3023e98`): such an entry holds back only
/// reads of that table.
///
/// The format is versioned. Version 1 (no marker) carries PostgreSQL LSNs in hex; version 2
/// (`v2.` first) carries any [`Position`], GTID sets included (`v2.default-m0_1_42`). A token
/// is written in the oldest version that can carry it, so tokens of LSNs read the same in
/// every release, and a token from a newer release names its version in the error.
///
/// ```
/// use diesel_sharding::{ConsistencyToken, Position};
///
/// let mut token: ConsistencyToken = "default-3023e98".parse()?;
/// token.merge(&"default-10.users-ff".parse()?);
/// assert_eq!(token.to_string(), "default-3023e98.users-ff");
/// assert_eq!(token.position("users"), Some(Position::Lsn(0xff)));
/// assert!("default-zz".parse::<ConsistencyToken>().is_err());
///
/// // a MariaDB GTID position needs version 2
/// let mut gtid = ConsistencyToken::new();
/// gtid.require("default", "0-1-42".parse().unwrap());
/// assert_eq!(gtid.to_string(), "v2.default-m0_1_42");
/// assert_eq!(gtid.to_string().parse::<ConsistencyToken>()?, gtid);
/// assert!("v3.default-1".parse::<ConsistencyToken>().is_err());
/// # Ok::<(), diesel_sharding::TokenError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsistencyToken {
    /// `(database, table or "" for the whole database)` -> position.
    positions: BTreeMap<(String, String), Position>,
    /// A MAC over the entries, when the cluster that issued it has a `token_secret`.
    signature: Option<[u8; SIGNATURE_LEN]>,
}

/// Bytes of the (truncated) HMAC-SHA256 a signed token carries.
const SIGNATURE_LEN: usize = 16;
/// The most entries (databases and tables) a token may hold.
pub(crate) const MAX_TOKEN_ENTRIES: usize = 64;
/// The longest database or table name a token may hold, in bytes.
pub(crate) const MAX_TOKEN_NAME: usize = 128;

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

    /// The position required on `database` (covering all of its tables), if any.
    pub fn position(&self, database: &str) -> Option<Position> {
        self.positions()
            .find(|(db, _)| *db == database)
            .map(|(_, p)| p)
    }

    /// The position required per database (covering all of its tables), in name order.
    pub fn positions(&self) -> impl Iterator<Item = (&str, Position)> {
        let mut out: Vec<(&str, Position)> = Vec::new();
        for ((db, _), p) in &self.positions {
            match out.last_mut() {
                Some((last, q)) if *last == db.as_str() => q.raise(p),
                _ => out.push((db.as_str(), p.clone())),
            }
        }
        out.into_iter()
    }

    /// Every entry: `(database, table or None for the whole database, position)`.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&str>, &Position)> {
        self.positions
            .iter()
            .map(|((db, t), p)| (db.as_str(), (!t.is_empty()).then_some(t.as_str()), p))
    }

    /// Requires `position` on `database` too (keeping the least position that covers both;
    /// a position of another kind than the one held replaces it).
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
        // a changed token is no longer the one that was signed
        self.signature = None;
        match self.positions.entry((database, table)) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().raise(&position),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(position);
            }
        }
    }

    /// Merges `other` in: per entry the least position that covers both. The result is
    /// unsigned.
    pub fn merge(&mut self, other: &ConsistencyToken) {
        for ((db, t), pos) in &other.positions {
            self.require_entry(db.clone(), t.clone(), pos.clone());
        }
        self.signature = None;
    }

    /// Does it carry a signature (checked by the cluster that has the secret)?
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// The entries without the signature, as signed.
    fn unsigned_text(&self) -> String {
        let mut unsigned = self.clone();
        unsigned.signature = None;
        unsigned.to_string()
    }

    /// Signs the token with `secret`.
    pub(crate) fn sign(&mut self, secret: &[u8]) {
        let mac = mac(secret, self.unsigned_text().as_bytes());
        self.signature = Some(mac);
    }

    /// Checks the signature against `secret`.
    pub(crate) fn verify(&self, secret: &[u8]) -> Result<(), TokenError> {
        use hmac::Mac;
        let Some(signature) = self.signature else {
            return Err(TokenError {
                part: String::new(),
                problem: "not signed, and this cluster requires signed tokens",
            });
        };
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret)
            .expect("HMAC takes keys of any length");
        m.update(self.unsigned_text().as_bytes());
        // constant time, over the truncated tag
        m.verify_truncated_left(&signature).map_err(|_| TokenError {
            part: String::new(),
            problem: "the signature does not match: forged, or signed with another secret",
        })
    }
}

/// The first [`SIGNATURE_LEN`] bytes of HMAC-SHA256(`secret`, `text`).
fn mac(secret: &[u8], text: &[u8]) -> [u8; SIGNATURE_LEN] {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    m.update(text);
    let full = m.finalize().into_bytes();
    let mut out = [0u8; SIGNATURE_LEN];
    out.copy_from_slice(&full[..SIGNATURE_LEN]);
    out
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

/// The newest token format this release writes and reads.
const VERSION: u32 = 2;

impl ConsistencyToken {
    /// The oldest format that can carry the token: 1 while every position is an LSN.
    fn version(&self) -> u32 {
        if self
            .positions
            .values()
            .all(|p| matches!(p, Position::Lsn(_)))
        {
            1
        } else {
            2
        }
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.version();
        if version > 1 {
            write!(f, "v{version}.")?;
        }
        for (i, ((db, table), pos)) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write_escaped(f, db)?;
            if !table.is_empty() {
                f.write_str("~")?;
                write_escaped(f, table)?;
            }
            f.write_str("-")?;
            pos.write_compact(f)?;
        }
        if let Some(signature) = &self.signature {
            if !self.positions.is_empty() {
                f.write_str(".")?;
            }
            f.write_str("!")?;
            for b in signature {
                write!(f, "{b:02x}")?;
            }
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
        let mut parts: Vec<&str> = s.split('.').collect();
        let mut version = 1;
        if let Some(v) = parts[0].strip_prefix('v') {
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                version = match v.parse::<u32>() {
                    Ok(v @ 1..=VERSION) => v,
                    _ => return Err(TokenError {
                        part: parts[0].chars().take(16).collect(),
                        problem:
                            "a token format this release does not know (written by a newer one?)",
                    }),
                };
                parts.remove(0);
                if parts.is_empty() {
                    return Err(TokenError {
                        part: s.chars().take(16).collect(),
                        problem: "a version and no entries",
                    });
                }
            }
        }
        if parts.len() > MAX_TOKEN_ENTRIES + 1 {
            return Err(TokenError {
                part: s.chars().take(16).collect(),
                problem: "more than 64 entries",
            });
        }
        for (i, part) in parts.iter().enumerate() {
            let bad = |problem| TokenError {
                part: part.chars().take(64).collect(),
                problem,
            };
            if let Some(hex) = part.strip_prefix('!') {
                if i + 1 != parts.len() {
                    return Err(bad("the signature must come last"));
                }
                if hex.len() != 2 * SIGNATURE_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("the signature is not 32 hex digits"));
                }
                let mut signature = [0u8; SIGNATURE_LEN];
                for (k, byte) in signature.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16)
                        .map_err(|_| bad("the signature is not hex"))?;
                }
                token.signature = Some(signature);
                break;
            }
            let (name, pos) = part
                .rsplit_once('-')
                .ok_or_else(|| bad("expected `<database>-<hex position>`"))?;
            let pos = Position::parse_compact(pos).map_err(bad)?;
            if version == 1 && !matches!(pos, Position::Lsn(_)) {
                return Err(bad("a GTID position in a version 1 token"));
            }
            let (db, table) = name.split_once('~').unwrap_or((name, ""));
            let db = unescape(db).ok_or_else(|| bad("the database name is badly escaped"))?;
            let table = unescape(table).ok_or_else(|| bad("the table name is badly escaped"))?;
            if db.is_empty() {
                return Err(bad("the database name is empty"));
            }
            if name.contains('~') && table.is_empty() {
                return Err(bad("the table name is empty"));
            }
            if db.len() > MAX_TOKEN_NAME || table.len() > MAX_TOKEN_NAME {
                return Err(bad("a name is longer than 128 bytes"));
            }
            if db.chars().chain(table.chars()).any(char::is_control) {
                return Err(bad("a name holds a control character"));
            }
            let signature = token.signature;
            token.require_entry(db, table, pos);
            token.signature = signature;
        }
        if token.positions.len() > MAX_TOKEN_ENTRIES {
            return Err(TokenError {
                part: s.chars().take(16).collect(),
                problem: "more than 64 entries",
            });
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
        t.require("default", Position::Lsn(0x3023E98));
        t.require("users.eu-1", Position::Lsn(7));
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
        t.require("default", Position::Lsn(5));
        t.require_table("default", "posts", Position::Lsn(9));
        let s = t.to_string();
        assert_eq!(s, "default-5.default~posts-9");
        assert_eq!(s.parse::<ConsistencyToken>().unwrap(), t);
        assert_eq!(t.position("default"), Some(Position::Lsn(9)));
        assert_eq!(
            t.positions().collect::<Vec<_>>(),
            vec![("default", Position::Lsn(9))]
        );
        assert!("default~-9".parse::<ConsistencyToken>().is_err());
    }

    #[test]
    fn version_2_carries_gtid_sets_and_version_1_still_parses() {
        // today's tokens, as issued before positions were a type
        let old: ConsistencyToken = "default-3023e98.users_0-1a2b3c".parse().unwrap();
        assert_eq!(old.position("users_0"), Some(Position::Lsn(0x1a2b3c)));
        assert_eq!(old.to_string(), "default-3023e98.users_0-1a2b3c");
        let mut t = ConsistencyToken::new();
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        t.require("maria", "0-1-42,1-2-7".parse().unwrap());
        t.require_table("maria", "posts", "0-1-50".parse().unwrap());
        t.require("mysql", format!("{uuid}:1-5:11-18").parse().unwrap());
        t.require("pg", Position::Lsn(0xff));
        let text = t.to_string();
        assert_eq!(
            text,
            "v2.maria-m0_1_42_1_2_7.maria~posts-m0_1_50\
             .mysql-s3e11fa4771ca11e19e33c80aa9429562_1x5_11x18.pg-ff"
        );
        assert_eq!(text.parse::<ConsistencyToken>().unwrap(), t);
        assert_eq!(
            t.position("maria").unwrap().to_string(),
            "0-1-50,1-2-7",
            "a database's position covers its tables'"
        );
        let mut merged = t.clone();
        merged.merge(&"v2.maria-m0_1_60".parse().unwrap());
        assert_eq!(
            merged.position("maria").unwrap().to_string(),
            "0-1-60,1-2-7"
        );
        // signed, the version is part of what is signed
        let secret = b"0123456789abcdef-secret";
        t.sign(secret);
        let signed: ConsistencyToken = t.to_string().parse().unwrap();
        signed.verify(secret).unwrap();
        for bad in [
            "default-m0_1_42",
            "v9.default-1",
            "v0.default-1",
            "v2.default-m0_1",
            "v2.default-s12",
            "v2",
            "v2.",
        ] {
            let e = bad.parse::<ConsistencyToken>();
            assert!(e.is_err(), "{bad}: {e:?}");
        }
        assert!("v9.default-1"
            .parse::<ConsistencyToken>()
            .unwrap_err()
            .to_string()
            .contains("newer"),);
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

    #[test]
    fn hostile_tokens_are_refused() {
        for bad in [
            "default%00-10",
            "default%01-10",
            "de%7Ffault-10",
            "default~a%0Ab-10",
            "default-10.!00",
            "!0123456789abcdef0123456789abcdef.default-10",
        ] {
            assert!(bad.parse::<ConsistencyToken>().is_err(), "{bad}");
        }
        let long = format!("default~{}-10", "t".repeat(129));
        assert!(long.parse::<ConsistencyToken>().is_err());
        let many: Vec<String> = (0..65).map(|i| format!("d{i}-1")).collect();
        assert!(many.join(".").parse::<ConsistencyToken>().is_err());
        let fine: Vec<String> = (0..64).map(|i| format!("d{i}-1")).collect();
        assert!(fine.join(".").parse::<ConsistencyToken>().is_ok());
    }

    #[test]
    fn a_signed_token_round_trips_and_a_changed_one_fails_its_check() {
        let secret = b"0123456789abcdef-secret";
        let mut t = ConsistencyToken::new();
        t.require("default", Position::Lsn(0x3023E98));
        t.sign(secret);
        let text = t.to_string();
        assert!(text.starts_with("default-3023e98.!"), "{text}");
        assert!(text.len() < 60, "short enough for a cookie: {text}");
        let back: ConsistencyToken = text.parse().unwrap();
        assert!(back.is_signed());
        back.verify(secret).unwrap();
        assert!(back.verify(b"another secret of sixteen").is_err());
        let forged = text.replace("3023e98", "3023e99");
        assert!(forged
            .parse::<ConsistencyToken>()
            .unwrap()
            .verify(secret)
            .is_err());
        let mut unsigned = ConsistencyToken::new();
        unsigned.require("default", Position::Lsn(1));
        assert!(unsigned.verify(secret).is_err());
        let mut merged = back.clone();
        merged.merge(&unsigned);
        assert!(!merged.is_signed(), "a changed token is no longer signed");
        let mut empty = ConsistencyToken::new();
        empty.sign(secret);
        let text = empty.to_string();
        assert!(text.starts_with('!'));
        text.parse::<ConsistencyToken>()
            .unwrap()
            .verify(secret)
            .unwrap();
    }
}
