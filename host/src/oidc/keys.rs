//! The provider's signing keys (its JWKS), by `kid`, fetched again when a
//! token names a key not among them: providers rotate keys, and publish
//! the new one before signing with it. The refetch is bounded: at most one
//! per [`REFETCH_AFTER`], and callers waiting on one share it, so a flood
//! of tokens with made-up `kid`s costs the provider one request a window.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::error::Result;

/// The least time between two fetches of the key set.
pub const REFETCH_AFTER: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct Keys {
    held: tokio::sync::Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// By `kid` (keys without one under the empty string).
    keys: HashMap<String, Jwk>,
    fetched: Option<Instant>,
}

impl Keys {
    /// The key for a token's `kid` and `alg`, fetching the set (first use,
    /// or an unknown `kid` and the last fetch older than [`REFETCH_AFTER`])
    /// with `fetch`. The inner `Err` says why no key fits (a 401).
    pub(super) async fn key_for<F, Fut>(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        fetch: F,
    ) -> Result<std::result::Result<DecodingKey, String>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<JwkSet>>,
    {
        let mut held = self.held.lock().await;
        let known = |held: &Held| match kid {
            Some(k) => held.keys.get(k).cloned(),
            // No `kid`: only unambiguous with one key.
            None if held.keys.len() == 1 => held.keys.values().next().cloned(),
            None => None,
        };
        let mut jwk = known(&held);
        let stale = held.fetched.is_none_or(|at| at.elapsed() >= REFETCH_AFTER);
        if jwk.is_none() && stale {
            let set = fetch().await?;
            held.keys = set
                .keys
                .into_iter()
                .map(|k| (k.common.key_id.clone().unwrap_or_default(), k))
                .collect();
            held.fetched = Some(Instant::now());
            jwk = known(&held);
        }
        let Some(jwk) = jwk else {
            return Ok(Err(match kid {
                Some(k) => format!(
                    "the token's key id {k:?} is not among the provider's keys (fetched {} s ago)",
                    held.fetched.map_or(0, |at| at.elapsed().as_secs())
                ),
                None => format!(
                    "the token names no key id (`kid`) and the provider has {} keys",
                    held.keys.len()
                ),
            }));
        };
        Ok(fits(&jwk, alg).and_then(|()| {
            DecodingKey::from_jwk(&jwk)
                .map_err(|e| format!("the provider's key {kid:?} cannot be used: {e}"))
        }))
    }
}

/// Whether a key of this type (and declared `alg`, if any) may verify `alg`.
fn fits(jwk: &Jwk, alg: Algorithm) -> std::result::Result<(), String> {
    use Algorithm as A;
    let family_fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
        ),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, A::ES256 | A::ES384),
        AlgorithmParameters::OctetKeyPair(_) => matches!(alg, A::EdDSA),
        AlgorithmParameters::OctetKey(_) => false,
    };
    let declared = jwk.common.key_algorithm.map(|k| format!("{k:?}"));
    let declared_fits = declared.as_deref().is_none_or(|d| d == format!("{alg:?}"));
    if family_fits && declared_fits {
        Ok(())
    } else {
        Err(format!(
            "the token says {alg:?}, which the provider's key {:?} is not for",
            jwk.common.key_id
        ))
    }
}
