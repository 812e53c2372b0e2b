//! Database URLs that never print their password.

use std::fmt;

/// A connection URL. `Debug` and `Display` show it with the password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretUrl(String);

impl SecretUrl {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The real URL, for opening a connection. Never log it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// Replaces every password in a connection string by `***`: the `user:password@` part of a
/// URL, `password=` query parameters, and libpq `password=` key/value pairs.
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    // scheme://user:password@host
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let rest = &out[auth_start..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.replace_range(auth_start + colon + 1..auth_start + at, "***");
            }
        }
    }
    // password=... in a query string or a libpq key/value string
    let mut search_from = 0;
    while let Some(found) = find_ignore_case(&out[search_from..], "password=") {
        let start = search_from + found + "password=".len();
        let boundary_ok = search_from + found == 0
            || matches!(
                out.as_bytes()[search_from + found - 1],
                b'?' | b'&' | b' ' | b';'
            );
        if !boundary_ok {
            search_from = start;
            continue;
        }
        let value_len = if out[start..].starts_with('\'') {
            // libpq quoted value
            out[start + 1..]
                .find('\'')
                .map(|e| e + 2)
                .unwrap_or(out.len() - start)
        } else {
            out[start..]
                .find(['&', ' ', ';', '#'])
                .unwrap_or(out.len() - start)
        };
        out.replace_range(start..start + value_len, "***");
        search_from = start + 3;
    }
    out
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The scheme of a URL (`postgres` in `postgres://...`), lowercased.
pub(crate) fn scheme(url: &str) -> Option<String> {
    let end = url.find("://")?;
    let s = &url[..end];
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        Some(s.to_ascii_lowercase())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_of_a_url() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
    }

    #[test]
    fn keeps_a_url_without_password() {
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact("/tmp/app.sqlite"), "/tmp/app.sqlite");
    }

    #[test]
    fn redacts_a_password_containing_at_and_colon() {
        let r = redact("postgres://app:p:a@ss@db/app");
        assert!(!r.contains("p:a@ss"), "{r}");
        assert!(r.ends_with("@db/app"), "{r}");
    }

    #[test]
    fn redacts_password_query_parameters_and_libpq_pairs() {
        assert_eq!(
            redact("postgres://db/app?user=app&password=hunter2&sslmode=off"),
            "postgres://db/app?user=app&password=***&sslmode=off"
        );
        assert_eq!(
            redact("host=db password='x y' user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(redact("host=db PASSWORD=abc"), "host=db PASSWORD=***");
    }

    #[test]
    fn secret_url_never_prints_the_password() {
        let u = SecretUrl::new("postgres://u:topsecret@h/d");
        assert!(!format!("{u:?}").contains("topsecret"));
        assert!(!format!("{u}").contains("topsecret"));
        assert_eq!(u.expose(), "postgres://u:topsecret@h/d");
    }

    #[test]
    fn reads_the_scheme() {
        assert_eq!(scheme("PostgreSQL://x").as_deref(), Some("postgresql"));
        assert_eq!(scheme("/tmp/x.db"), None);
        assert_eq!(scheme("file:x.db"), None);
    }
}
