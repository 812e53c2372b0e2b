//! The Redis store (feature `redis`).

use std::sync::Mutex;
use std::time::Duration;

use super::{StickStore, StoreError};

/// How long a Redis call may take before the store counts as down, unless
/// [`RedisStore::timeout`] says otherwise.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// A [`StickStore`] in Redis, shared by every process that uses the same server: each key is
/// a Redis set (`SADD`, `SMEMBERS`, `SREM`) under a prefix, expiring (`PEXPIRE`) its TTL after
/// the last add.
///
/// One connection, opened at the first call and reopened after an error; every call is
/// bounded by the store's timeout (connect, read and write), so a frozen or dead Redis is an
/// error within it, never a hang.
pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Option<redis::Connection>>,
    /// For messages: the server's address, without credentials.
    server: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.server)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis server at `url` (`redis://[:password@]host:port/db`), its keys
    /// prefixed `diesel_sharding:stick:`. Nothing is connected until the first call.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError(format!("not a Redis URL: {}", scrub(&e.to_string(), url))))?;
        let info = client.get_connection_info();
        let server = match &info.addr {
            redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            other => format!("{other:?}").chars().take(80).collect(),
        };
        Ok(RedisStore {
            client,
            prefix: "diesel_sharding:stick:".to_owned(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            conn: Mutex::new(None),
            server,
        })
    }

    /// Keys under `prefix` instead.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Each call's bound (default [`DEFAULT_REDIS_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `f` on the connection (opened if needed); drops the connection on an error.
    fn call<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(self.timeout)
                .and_then(|c| {
                    c.set_read_timeout(Some(self.timeout))?;
                    c.set_write_timeout(Some(self.timeout))?;
                    Ok(c)
                })
                .map_err(|e| self.error(&e))?;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(StoreError(format!(
                "Redis at {}: no connection",
                self.server
            )));
        };
        match f(conn) {
            Ok(value) => Ok(value),
            Err(e) => {
                *slot = None;
                Err(self.error(&e))
            }
        }
    }

    fn error(&self, e: &redis::RedisError) -> StoreError {
        StoreError(format!("Redis at {}: {e}", self.server))
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl StickStore for RedisStore {
    fn add(&self, key: &str, token: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(key);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.call(|c| {
            redis::pipe()
                .atomic()
                .cmd("SADD")
                .arg(&key)
                .arg(token)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl_ms)
                .ignore()
                .query::<()>(c)
        })
    }

    fn tokens(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let key = self.key(key);
        self.call(|c| redis::cmd("SMEMBERS").arg(&key).query::<Vec<String>>(c))
    }

    fn forget(&self, key: &str, tokens: &[String]) -> Result<(), StoreError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let key = self.key(key);
        self.call(|c| redis::cmd("SREM").arg(&key).arg(tokens).query::<()>(c))
    }
}

/// `text` without the password of `url`, if it holds one, nor of any URL in it.
fn scrub(text: &str, url: &str) -> String {
    let mut out = crate::settings::scrub_text(text);
    for secret in crate::settings::url_secrets(url) {
        out = out.replace(&secret, "***");
    }
    out
}
