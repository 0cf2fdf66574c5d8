//! Who a bearer token belongs to, for the provisioning and admin APIs.
//!
//! Two ways beside the shared secrets: a Matrix access token, checked with
//! `/whoami` on the homeserver, and an OAuth access token, checked by
//! introspection at the configured issuer ([`introspection`]). Both are
//! cached by the token's SHA-256 (never the token) so a busy client does
//! not turn every request into a call:
//!
//! - a valid token is trusted for `token-cache-secs` (an OAuth token no
//!   longer than its `exp` nor `[oauth] max-cache-secs`), but only for
//!   requests that read: a request that changes something checks afresh,
//!   and a token found gone then replaces what was cached;
//! - an invalid token is remembered for a minute, and the checks of one
//!   token run once however many requests bring it at the same time, so a
//!   flood of the same bad token costs one call;
//! - a client address that fails `failed-auth-per-minute` times gets 429
//!   until its budget refills, without its tokens being checked, and an
//!   address has at most a few checks running at once, so random tokens,
//!   one after another or all at once, cannot turn into a stream of calls
//!   to the homeserver (IPv6 clients count by their /64).
//!
//! A homeserver's own tokens (`syt_…`) go only to `/whoami`, never to the
//! OAuth issuer; other tokens go to the issuer first and to `/whoami` only
//! if the issuer does not know them. An OAuth token the issuer knows but
//! weft refuses (expired, wrong audience or scope) is refused.

pub mod introspection;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::Expiry;
use moka::future::Cache;
use ruma::OwnedUserId;
use ruma::api::client::account::whoami;
use sha2::{Digest, Sha256};

use crate::api_error::ApiError;
use crate::matrix::client::HomeserverClient;
use introspection::{IntrospectionError, Introspector};

/// How long a refused token is remembered.
const REFUSED_FOR: Duration = Duration::from_secs(60);
/// At most this many tokens are remembered; the least used go first.
const CACHED_TOKENS: u64 = 10_000;
/// Checks of unknown tokens one client address may have running at once.
const CHECKS_AT_ONCE: usize = 4;
/// Failure budgets kept before those of quiet addresses are dropped.
const TRACKED_CLIENTS: usize = 10_000;

/// Whom a token was found to belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    /// The Matrix user.
    pub user: OwnedUserId,
    /// The token's OAuth scopes (none for a Matrix access token).
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone)]
enum Verdict {
    Valid {
        owner: TokenOwner,
        trust_for: Duration,
    },
    Refused,
}

struct VerdictExpiry;

impl Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _: &[u8; 32], verdict: &Verdict, _: Instant) -> Option<Duration> {
        Some(match verdict {
            Verdict::Valid { trust_for, .. } => *trust_for,
            Verdict::Refused => REFUSED_FOR,
        })
    }

    fn expire_after_update(
        &self,
        key: &[u8; 32],
        verdict: &Verdict,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, verdict, now)
    }
}

/// Whether a request may use a cached verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// A request that only reads: a recent verdict will do.
    Cached,
    /// A request that changes something: check the token now.
    Fresh,
}

/// The checker.
pub struct TokenAuth {
    homeserver: Option<HomeserverClient>,
    introspector: Option<Introspector>,
    matrix_trust: Duration,
    verdicts: Cache<[u8; 32], Verdict>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses out of failures, until their budget refills.
    cooling: Cache<IpAddr, ()>,
    /// Each address's permits for checks of unknown tokens.
    checking: Cache<IpAddr, Arc<tokio::sync::Semaphore>>,
}

impl TokenAuth {
    /// A checker that asks `homeserver` about Matrix tokens (if given) and
    /// `introspector` about OAuth tokens (if given).
    pub fn new(
        homeserver: Option<HomeserverClient>,
        introspector: Option<Introspector>,
        matrix_trust: Duration,
        failed_per_minute: u32,
    ) -> Arc<Self> {
        let per_minute = NonZeroU32::new(failed_per_minute).unwrap_or(NonZeroU32::MIN);
        Arc::new(Self {
            homeserver,
            introspector,
            matrix_trust,
            verdicts: Cache::builder()
                .max_capacity(CACHED_TOKENS)
                .expire_after(VerdictExpiry)
                .build(),
            failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
            cooling: Cache::builder()
                .max_capacity(CACHED_TOKENS)
                .time_to_live(Duration::from_secs(60))
                .build(),
            checking: Cache::builder()
                .max_capacity(CACHED_TOKENS)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        })
    }

    /// Whether any way of checking tokens is configured.
    pub fn is_enabled(&self) -> bool {
        self.homeserver.is_some() || self.introspector.is_some()
    }

    /// Whether `owner`'s token carries the admin scope.
    pub fn grants_admin(&self, owner: &TokenOwner) -> bool {
        self.introspector
            .as_ref()
            .is_some_and(|i| i.grants_admin(&owner.scopes))
    }

    /// Whom `token`, presented by `client`, belongs to.
    pub async fn owner(
        &self,
        token: &str,
        client: IpAddr,
        freshness: Freshness,
    ) -> Result<TokenOwner, ApiError> {
        let client = crate::routes::client_key(client);
        if self.cooling.contains_key(&client) {
            return Err(too_many_failures());
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.verdicts.get(&key).await;
        // A refusal stands either way; a valid verdict only for reads.
        let usable = matches!(
            (&cached, freshness),
            (Some(Verdict::Refused), _) | (Some(Verdict::Valid { .. }), Freshness::Cached)
        );
        let verdict = if usable {
            cached.expect("usable means cached")
        } else {
            // A few checks per address at once; the rest wait, and find
            // the address cooling if those failed.
            let permits = self
                .checking
                .get_with(client, async {
                    Arc::new(tokio::sync::Semaphore::new(CHECKS_AT_ONCE))
                })
                .await;
            let _permit = permits.acquire_owned().await.map_err(ApiError::internal)?;
            if self.cooling.contains_key(&client) {
                return Err(too_many_failures());
            }
            if freshness == Freshness::Fresh {
                self.verdicts.invalidate(&key).await;
            }
            // Concurrent requests with the same token share one check.
            let token = token.to_owned();
            self.verdicts
                .try_get_with(key, async move { self.verify(&token).await })
                .await
                .map_err(|error| (*error).clone())?
        };
        match verdict {
            Verdict::Valid { owner, .. } => Ok(owner),
            Verdict::Refused => {
                if self.failures.len() > TRACKED_CLIENTS {
                    self.failures.retain_recent();
                }
                if let Err(not_until) = self.failures.check_key(&client) {
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ));
                    tracing::warn!(%client, "too many failed authentications; refusing this address for a while");
                    self.cooling.insert(client, ()).await;
                    return Err(too_many_failures().with_retry_after(wait));
                }
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "M_UNKNOWN_TOKEN",
                    "the access token is not valid",
                ))
            }
        }
    }

    async fn verify(&self, token: &str) -> Result<Verdict, ApiError> {
        // A homeserver's own token is none of the issuer's business.
        let matrix_token = token.starts_with("syt_") && self.homeserver.is_some();
        if let Some(introspector) = self.introspector.as_ref().filter(|_| !matrix_token) {
            match introspector.check(token).await {
                Ok(checked) => {
                    let until_expiry = checked
                        .expires
                        .and_then(|exp| exp.duration_since(SystemTime::now()).ok())
                        .unwrap_or(Duration::MAX);
                    return Ok(Verdict::Valid {
                        owner: TokenOwner {
                            user: checked.user,
                            scopes: checked.scopes,
                        },
                        trust_for: until_expiry.min(introspector.max_cache()),
                    });
                }
                // Not an OAuth token: it may still be a Matrix one.
                Err(IntrospectionError::Inactive) => {}
                // The issuer's token, but not good enough here: no second
                // way around `audience` or `required-scope`.
                Err(IntrospectionError::Refused(why)) => {
                    tracing::debug!(%why, "introspection refused a token");
                    return Ok(Verdict::Refused);
                }
                Err(IntrospectionError::Unavailable(error)) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "M_UNAVAILABLE",
                        error.to_string(),
                    ));
                }
            }
        }
        let Some(homeserver) = &self.homeserver else {
            return Ok(Verdict::Refused);
        };
        match homeserver
            .send_as_token(whoami::v3::Request::new(), token)
            .await
        {
            Ok(response) => Ok(Verdict::Valid {
                owner: TokenOwner {
                    user: response.user_id,
                    scopes: Vec::new(),
                },
                trust_for: self.matrix_trust,
            }),
            Err(error)
                if matches!(
                    error.errcode(),
                    Some("M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN" | "M_FORBIDDEN")
                ) =>
            {
                Ok(Verdict::Refused)
            }
            Err(error) => Err(ApiError::internal(error)),
        }
    }
}

fn too_many_failures() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
        "too many failed authentications from this address; try again later",
    )
    .with_retry_after(Duration::from_secs(60))
}
