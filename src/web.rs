//! Consistency tokens carried by HTTP requests (feature `tower`): a
//! [tower](https://docs.rs/tower) layer for axum, tonic, hyper and anything else built on
//! tower services.
//!
//! [`ConsistencyLayer`] reads the token a client sent back (a cookie, or a request header),
//! runs the request inside [`Cluster::with_token_async`] in a [task scope](crate::task::scope)
//! of its own, and writes the request's new token back (a `Set-Cookie`, or a response
//! header) when it changed: a page that follows a form post reads the row the post wrote, and
//! later pages read from a replica once it has that row.
//!
//! A token that does not parse, or whose signature does not match the cluster's
//! `token_secret`, is ignored with a warning (target `diesel_sharding::web`): the request
//! runs as if it had none, never fails because of it. With a `token_secret` in the
//! settings, the tokens written are signed, and unsigned or forged ones are refused.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use diesel::pg::PgConnection;
//! use diesel_sharding::web::{ConsistencyLayer, SameSite};
//! use diesel_sharding::{Cluster, Settings};
//!
//! let cluster: Cluster<PgConnection> = Cluster::new(Settings::from_file("sharding.toml")?)?;
//! let layer = ConsistencyLayer::new(cluster)
//!     .cookie("consistency") // the default name
//!     .max_age(std::time::Duration::from_secs(600))
//!     .same_site(SameSite::Lax)
//!     .secure(true);
//! // axum: Router::new().route(..).layer(layer)
//! # let _ = layer;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "postgres"))]
//! # fn main() {}
//! ```
//!
//! Handlers that run sync Diesel on a blocking thread use
//! [`task::spawn_blocking`](crate::task::spawn_blocking), which carries the request's scope
//! there and its writes back (tokio's own `spawn_blocking` carries nothing).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, COOKIE, SET_COOKIE};
use http::{Request, Response};

use crate::backend::RoutedBackend;
use crate::consistency::ConsistencyToken;
use crate::Cluster;

pub use cookie::SameSite;

/// The cookie name used unless [`ConsistencyLayer::cookie`] names another.
pub const DEFAULT_COOKIE: &str = "consistency";

/// How long a token cookie lives unless [`ConsistencyLayer::max_age`] says otherwise: long
/// past any replica lag the router tolerates (a token older than the replicas' lag costs
/// nothing: every replica has it).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// Where the token travels.
#[derive(Debug, Clone)]
enum Carrier {
    Cookie(CookieSpec),
    Header(HeaderName),
}

/// The token cookie's name and attributes.
#[derive(Debug, Clone)]
struct CookieSpec {
    name: String,
    max_age: Duration,
    http_only: bool,
    secure: bool,
    same_site: SameSite,
    path: String,
}

impl Default for CookieSpec {
    fn default() -> Self {
        CookieSpec {
            name: DEFAULT_COOKIE.to_owned(),
            max_age: DEFAULT_MAX_AGE,
            http_only: true,
            secure: false,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
        }
    }
}

/// A tower [`Layer`](tower_layer::Layer) that runs each request under the consistency token
/// its client sent back, and sends the request's new token to the client; see the
/// [module](self).
#[derive(Debug)]
pub struct ConsistencyLayer<C: RoutedBackend> {
    cluster: Cluster<C>,
    carrier: Arc<Carrier>,
}

impl<C: RoutedBackend> Clone for ConsistencyLayer<C> {
    fn clone(&self) -> Self {
        ConsistencyLayer {
            cluster: self.cluster.clone(),
            carrier: self.carrier.clone(),
        }
    }
}

impl<C: RoutedBackend> ConsistencyLayer<C> {
    /// Tokens in a cookie named [`DEFAULT_COOKIE`]: `HttpOnly`, `SameSite=Lax`, `Path=/`,
    /// `Max-Age` [`DEFAULT_MAX_AGE`], not `Secure` (set [`secure`](Self::secure) behind
    /// HTTPS).
    pub fn new(cluster: Cluster<C>) -> Self {
        ConsistencyLayer {
            cluster,
            carrier: Arc::new(Carrier::Cookie(CookieSpec::default())),
        }
    }

    /// The token in a cookie named `name` (the default carrier; this keeps its other
    /// attributes).
    pub fn cookie(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.edit_cookie(|c| c.name = name);
        self
    }

    /// The cookie's `Max-Age` (whole seconds).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.edit_cookie(|c| c.max_age = max_age);
        self
    }

    /// The cookie's `HttpOnly` (default on: scripts have no use for the token).
    pub fn http_only(mut self, on: bool) -> Self {
        self.edit_cookie(|c| c.http_only = on);
        self
    }

    /// The cookie's `Secure` (default off; turn it on behind HTTPS).
    pub fn secure(mut self, on: bool) -> Self {
        self.edit_cookie(|c| c.secure = on);
        self
    }

    /// The cookie's `SameSite` (default `Lax`: the token comes back after a cross-site
    /// navigation, not with cross-site posts).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.edit_cookie(|c| c.same_site = same_site);
        self
    }

    /// The cookie's `Path` (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.edit_cookie(|c| c.path = path);
        self
    }

    /// The token in a request header and a response header named `name` instead of a
    /// cookie: for API clients, which send back what the last response carried.
    pub fn header(mut self, name: HeaderName) -> Self {
        self.carrier = Arc::new(Carrier::Header(name));
        self
    }

    /// Edits the cookie's spec (a layer that carried tokens in a header carries them in
    /// the default cookie from now on).
    fn edit_cookie(&mut self, f: impl FnOnce(&mut CookieSpec)) {
        let mut spec = match &*self.carrier {
            Carrier::Cookie(spec) => spec.clone(),
            Carrier::Header(_) => CookieSpec::default(),
        };
        f(&mut spec);
        self.carrier = Arc::new(Carrier::Cookie(spec));
    }
}

impl<S, C: RoutedBackend> tower_layer::Layer<S> for ConsistencyLayer<C> {
    type Service = ConsistencyService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ConsistencyService {
            inner,
            cluster: self.cluster.clone(),
            carrier: self.carrier.clone(),
        }
    }
}

/// The service [`ConsistencyLayer`] wraps around an inner service.
#[derive(Debug)]
pub struct ConsistencyService<S, C: RoutedBackend> {
    inner: S,
    cluster: Cluster<C>,
    carrier: Arc<Carrier>,
}

impl<S: Clone, C: RoutedBackend> Clone for ConsistencyService<S, C> {
    fn clone(&self) -> Self {
        ConsistencyService {
            inner: self.inner.clone(),
            cluster: self.cluster.clone(),
            carrier: self.carrier.clone(),
        }
    }
}

impl<S, C, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for ConsistencyService<S, C>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    C: RoutedBackend,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // the service that was made ready serves this request (tower's clone-and-swap)
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = self.carrier.read(&request, &self.cluster);
        let cluster = self.cluster.clone();
        let carrier = self.carrier.clone();
        Box::pin(crate::task::scope(async move {
            let (result, next) = cluster
                .with_token_async(&token, async {
                    let result = inner.call(request).await;
                    (result, cluster.token())
                })
                .await;
            let mut response = result?;
            if !next.is_empty() && next != token {
                carrier.write(&mut response, &next);
            }
            Ok(response)
        }))
    }
}

impl Carrier {
    /// The token the request carries (none, with a warning, when it is not one the cluster
    /// accepts).
    fn read<B, C: RoutedBackend>(
        &self,
        request: &Request<B>,
        cluster: &Cluster<C>,
    ) -> ConsistencyToken {
        let text = match self {
            Carrier::Cookie(CookieSpec { name, .. }) => request
                .headers()
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(cookie::Cookie::split_parse)
                .filter_map(Result::ok)
                .find(|c| c.name() == name)
                .map(|c| c.value().to_owned()),
            Carrier::Header(name) => request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return ConsistencyToken::default();
        };
        // cookie values travel percent-encoded where they hold characters cookies cannot
        let text = percent_decode(&text);
        match cluster.parse_token(&text) {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(
                    target: "diesel_sharding::web",
                    error = %e,
                    "ignoring the request's consistency token"
                );
                ConsistencyToken::default()
            }
        }
    }

    /// Sends `token` with the response.
    fn write<B>(&self, response: &mut Response<B>, token: &ConsistencyToken) {
        let text = token.to_string();
        let value = match self {
            Carrier::Cookie(CookieSpec {
                name,
                max_age,
                http_only,
                secure,
                same_site,
                path,
            }) => {
                let cookie = cookie::Cookie::build((name.as_str(), percent_encode(&text)))
                    .max_age(cookie::time::Duration::seconds(
                        i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
                    ))
                    .http_only(*http_only)
                    .secure(*secure)
                    .same_site(*same_site)
                    .path(path.as_str())
                    .build();
                HeaderValue::from_str(&cookie.to_string()).map(|v| (SET_COOKIE, v))
            }
            Carrier::Header(name) => HeaderValue::from_str(&text).map(|v| (name.clone(), v)),
        };
        match value {
            Ok((name, value)) => {
                response.headers_mut().append(name, value);
            }
            Err(e) => tracing::warn!(
                target: "diesel_sharding::web",
                error = %e,
                "a consistency token that is no header value: not sent"
            ),
        }
    }
}

/// Percent-encodes what a cookie value cannot hold (RFC 6265: no controls, whitespace, `"`,
/// `,`, `;` or `\`), and `%` itself.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The inverse of [`percent_encode`] (a `%` not followed by two hex digits stays).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_round_trip_through_percent_encoding() {
        for text in [
            "",
            "v1;db=0/3023E98",
            "v2 a,b;\"q\"\\ %41 é",
            "%%%zz%4",
            "default=0-1-42,1-2-7|sig=abc",
        ] {
            let encoded = percent_encode(text);
            assert!(!encoded.contains([';', ',', ' ', '"', '\\']), "{encoded}");
            assert_eq!(percent_decode(&encoded), text);
        }
    }
}
