//! Database URLs that never print their password, and a scrubber for any text that may
//! carry one (settings values echoed in errors, driver error messages).
//!
//! Passwords hide in more places than `user:password@`: libpq takes URLs whose password
//! holds `?`, `#` or `/`, query parameters (`?password=`, also percent-encoded as
//! `?pass%77ord=`), and key/value strings (`password = 's3 cret'`, after a tab or a
//! newline, with `\'` escapes). A malformed URL makes libpq quote the password as a port.
//! Everything here errs towards hiding too much.

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

    /// `text` (a driver's error message, say) with this URL's secrets, and any password
    /// it recognises, replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in secrets(&self.0) {
            if out.contains(&secret) {
                out = out.replace(&secret, "***");
            }
        }
        scrub_text(&out)
    }

    /// The URL as it may be shown.
    fn redacted(&self) -> String {
        self.scrub(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces every password in a connection string by `***`.
#[cfg(test)]
fn redact(url: &str) -> String {
    scrub_text(url)
}

/// Replaces every password found in free text by `***`: the credentials of every URL in it
/// (everything between the scheme's `://` and the last `@` of the URL), `password` query
/// parameters (percent-encoded names too) and `password = value` key/value pairs.
pub(crate) fn scrub_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(after.len());
        let (url_rest, tail) = after.split_at(end);
        out.push_str(&redact_url_rest(url_rest));
        rest = tail;
    }
    out.push_str(rest);
    redact_key_values(&out)
}

/// The part of a URL after `scheme://`: credentials up to the last `@`, and password query
/// parameters.
fn redact_url_rest(rest: &str) -> String {
    let mut out = match rest.rfind('@') {
        Some(at) => {
            let creds = &rest[..at];
            match creds.find(':') {
                Some(colon) => format!("{}:***{}", &creds[..colon], &rest[at..]),
                // `user@host`: a user name without a password, unless it looks cut short
                None if creds.contains(['/', '?', '#', '%']) => format!("***{}", &rest[at..]),
                None => rest.to_owned(),
            }
        }
        None => rest.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_password_key(&percent_decode(k)) => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{base}{}", redacted.join("&"));
    }
    out
}

fn is_password_key(key: &str) -> bool {
    let k = key.trim();
    k.eq_ignore_ascii_case("password")
}

/// `password = value` pairs (libpq key/value strings, or any text): the value, quoted or not.
fn redact_key_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while let Some(found) = find_ignore_case(&text[i..], "password") {
        let start = i + found;
        let mut j = start + "password".len();
        // the word must stand alone: not `mypassword=`, not `password_file`
        let standalone_before = start == 0 || !is_word_byte(bytes[start - 1]);
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        if !standalone_before || j >= bytes.len() || bytes[j] != b'=' {
            i = start + 1;
            continue;
        }
        j += 1;
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        let value_end = if j < bytes.len() && bytes[j] == b'\'' {
            // quoted: `\'` and `\\` escape
            let mut k = j + 1;
            while k < bytes.len() && bytes[k] != b'\'' {
                k += if bytes[k] == b'\\' { 2 } else { 1 };
            }
            (k + 1).min(bytes.len())
        } else {
            let mut k = j;
            while k < bytes.len()
                && !bytes[k].is_ascii_whitespace()
                && !matches!(bytes[k], b'&' | b';' | b'#' | b'"' | b',')
            {
                k += 1;
            }
            k
        };
        out.push_str(&text[copied..j]);
        out.push_str("***");
        copied = value_end;
        i = value_end.max(start + 1);
    }
    out.push_str(&text[copied.min(text.len())..]);
    out
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every substring of `url` that may be (part of) its password, as libpq may quote it back:
/// the credentials and their pieces around `/`, `?`, `#`, `:`, and `password=` values, raw
/// and percent-decoded. Pieces shorter than three characters are left out (replacing them
/// would mangle messages without hiding anything useful).
pub(crate) fn secrets(url: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        for candidate in [s.to_owned(), percent_decode(s)] {
            if candidate.chars().count() >= 3 && !found.contains(&candidate) {
                found.push(candidate);
            }
        }
    };
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = rest.rfind('@') {
            let creds = &rest[..at];
            if let Some(colon) = creds.find(':') {
                let password = &creds[colon + 1..];
                add(password);
                for piece in password.split(['/', '?', '#', ':', '@']) {
                    add(piece);
                }
            }
        }
        if let Some(q) = rest.find('?') {
            for pair in rest[q + 1..].split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if is_password_key(&percent_decode(k)) {
                        add(v.split('#').next().unwrap_or(v));
                    }
                }
            }
        }
    }
    // key/value form: what `redact_key_values` would hide
    let redacted = redact_key_values(url);
    if redacted != url {
        let mut i = 0;
        while let Some(found_at) = find_ignore_case(&url[i..], "password") {
            let start = i + found_at + "password".len();
            let tail = url[start..].trim_start_matches([' ', '\t']);
            if let Some(value) = tail.strip_prefix('=') {
                let value = value.trim_start_matches([' ', '\t']);
                let value = if let Some(quoted) = value.strip_prefix('\'') {
                    quoted
                        .split('\'')
                        .next()
                        .unwrap_or(quoted)
                        .replace("\\'", "'")
                } else {
                    value
                        .split(|c: char| c.is_ascii_whitespace())
                        .next()
                        .unwrap_or(value)
                        .to_owned()
                };
                add(&value);
            }
            i = start;
        }
    }
    found
}

/// `url` with the libpq option `key=value` added, unless the URL sets it already. Parsed as
/// libpq parses it, never glued on: in `postgres://u:pa?ss@h/db` the `?` belongs to the
/// password (libpq ends the credentials at the first `@` before any `/`), so the option goes
/// after the path. Key/value strings get ` key=value`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn with_libpq_option(url: &str, key: &str, value: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        let has = url.split_whitespace().any(|pair| {
            pair.split_once('=')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        });
        return if has {
            url.to_owned()
        } else {
            format!("{url} {key}={value}")
        };
    };
    let rest = &url[scheme_end + 3..];
    // credentials: up to the first `@` before any `/`
    let creds_end = match rest.find(['@', '/']) {
        Some(i) if rest.as_bytes()[i] == b'@' => i + 1,
        _ => 0,
    };
    let after_creds = &rest[creds_end..];
    match after_creds.find('?') {
        Some(q) => {
            let query = &after_creds[q + 1..];
            let has = query.split('&').any(|pair| {
                pair.split_once('=')
                    .is_some_and(|(k, _)| percent_decode(k).eq_ignore_ascii_case(key))
            });
            if has {
                url.to_owned()
            } else {
                format!("{url}&{key}={value}")
            }
        }
        None => format!("{url}?{key}={value}"),
    }
}

/// Decodes `%XX` escapes; invalid ones stay as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(
            redact("postgres://db:5432/app?sslmode=off"),
            "postgres://db:5432/app?sslmode=off"
        );
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
    fn libpq_options_go_where_libpq_reads_them() {
        let add = |u: &str| with_libpq_option(u, "connect_timeout", "2");
        assert_eq!(add("postgres://h/db"), "postgres://h/db?connect_timeout=2");
        assert_eq!(
            add("postgres://h/db?sslmode=off"),
            "postgres://h/db?sslmode=off&connect_timeout=2"
        );
        assert_eq!(
            add("postgres://u:pa?ss@h/db"),
            "postgres://u:pa?ss@h/db?connect_timeout=2"
        );
        assert_eq!(
            add("postgres://h/db?connect_timeout=5"),
            "postgres://h/db?connect_timeout=5"
        );
        assert_eq!(
            add("host=h dbname=db"),
            "host=h dbname=db connect_timeout=2"
        );
        assert_eq!(add("host=h connect_timeout=9"), "host=h connect_timeout=9");
        assert_eq!(
            add("postgres://u:connect_timeout@h/db"),
            "postgres://u:connect_timeout@h/db?connect_timeout=2"
        );
    }

    #[test]
    fn reads_the_scheme() {
        assert_eq!(scheme("PostgreSQL://x").as_deref(), Some("postgresql"));
        assert_eq!(scheme("/tmp/x.db"), None);
        assert_eq!(scheme("file:x.db"), None);
    }
}
