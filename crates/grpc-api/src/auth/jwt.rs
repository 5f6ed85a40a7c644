//! Bearer JWTs checked against a JWK set (`ORDERFLOW_JWT_JWKS`): the key is
//! chosen by the token's `kid`, and the token's `alg` must be one the key
//! allows (its JWK `alg`, else its type's), so a token cannot pick how its
//! signature is checked (`alg: none`, or an RSA public key used as an HMAC
//! secret). `exp`, `nbf`, `iss` and `aud` are checked; `sub` names the
//! principal and the space-separated `scope` claim gives its scopes.
//!
//! A verified token is cached, keyed by the whole token, until its `exp`:
//! a client sending the same token on every call pays for one signature
//! check. The cache belongs to one version of the key set, so a reload that
//! removes a key also forgets every token it verified.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::principals::{Principal, Principals};
use super::{AuthConfigError, Scopes};

/// Most verified tokens remembered at once; past it the least recently
/// used are forgotten (and verified again if they come back).
const CACHE_CAPACITY: usize = 16_384;

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

/// The checks every token passes besides its signature.
#[derive(Debug, Clone, Default)]
pub struct JwtRules {
    /// The only `iss` accepted; `None`: any.
    pub issuer: Option<String>,
    /// The `aud` a token must name; `None`: any.
    pub audience: Option<String>,
}

/// One version of the key set, with the tokens it has verified.
#[derive(Debug)]
pub struct Jwks {
    keys: Vec<Key>,
    /// foldhash: a token is hashed on every call, and SipHash over a
    /// 700-byte JWT costs a cached call more than the rest of auth. Flooding
    /// it needs tokens that verify, so DoS resistance buys nothing here.
    cache: scc::HashCache<Box<str>, Verified, foldhash::fast::RandomState>,
}

#[derive(Debug)]
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

#[derive(Debug, Clone)]
struct Verified {
    principal: Arc<Principal>,
    /// `exp`, in seconds since the epoch.
    expires: u64,
}

/// Defaults, so a token without `sub` or `exp` is refused by the
/// validation's required claims (as a missing claim), not as malformed.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    exp: u64,
}

/// Why a token was refused: said in the UNAUTHENTICATED message, which
/// never quotes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not three base64url parts, or a header or claims that do not parse.
    #[error("the JWT is malformed")]
    Malformed,
    /// `kid` names no key of the set (or it has none and the set has several).
    #[error("the JWT's key (`kid`) is not in the key set")]
    UnknownKey,
    /// `alg` is not one the key allows.
    #[error("the JWT's `alg` does not match its key")]
    WrongAlgorithm,
    /// The signature does not verify.
    #[error("the JWT's signature does not verify")]
    BadSignature,
    /// `exp` is past.
    #[error("the JWT has expired")]
    Expired,
    /// `nbf` is ahead.
    #[error("the JWT is not valid yet (`nbf`)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the JWT's issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not name this service.
    #[error("the JWT's audience is not this service")]
    WrongAudience,
    /// A required claim (`exp`, `sub`) is missing or of the wrong type.
    #[error("the JWT lacks a required claim (`sub`, `exp`)")]
    MissingClaim,
}

impl Jwks {
    /// Parses a JWK set (`{"keys": [...]}`) under `rules`. Keys for
    /// encryption (`use: enc`) are skipped; a key of a type this server
    /// cannot verify with, or a symmetric (`oct`) key without `alg`, is an
    /// error naming it.
    pub fn parse(text: &str, rules: &JwtRules) -> Result<Self, AuthConfigError> {
        let set: JwkSet = serde_json::from_str(text)
            .map_err(|e| AuthConfigError::new(format!("not a JWK set: {e}")))?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for (i, jwk) in set.keys.iter().enumerate() {
            let kid = jwk.common.key_id.clone();
            let at = |what: &str| {
                AuthConfigError::new(format!(
                    "keys[{i}]{}: {what}",
                    kid.as_deref()
                        .map(|k| format!(" (kid {k:?})"))
                        .unwrap_or_default()
                ))
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let algorithms = match jwk.common.key_algorithm {
                Some(alg) => vec![
                    Algorithm::try_from(alg)
                        .map_err(|_| at(&format!("`alg` {alg} is not a signature algorithm")))?,
                ],
                None => match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => vec![
                        Algorithm::RS256,
                        Algorithm::RS384,
                        Algorithm::RS512,
                        Algorithm::PS256,
                        Algorithm::PS384,
                        Algorithm::PS512,
                    ],
                    AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                        EllipticCurve::P256 => vec![Algorithm::ES256],
                        EllipticCurve::P384 => vec![Algorithm::ES384],
                        _ => return Err(at("unsupported curve (P-256 or P-384)")),
                    },
                    AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
                    AlgorithmParameters::OctetKey(_) => {
                        return Err(at("a symmetric (`oct`) key needs its `alg`"));
                    }
                    _ => return Err(at("unsupported key type")),
                },
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| at(&format!("unusable key: {e}")))?;
            // The key's type and every allowed algorithm must agree (an RSA
            // key given `alg: HS256` would otherwise verify nothing, silently).
            if algorithms.iter().any(|alg| alg.family() != key.family()) {
                return Err(at("`alg` does not fit the key's type"));
            }
            let mut validation = Validation::new(Algorithm::RS256);
            validation.algorithms = algorithms;
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "sub"]);
            match &rules.issuer {
                Some(issuer) => {
                    validation.set_issuer(&[issuer]);
                    validation.required_spec_claims.insert("iss".into());
                }
                None => validation.iss = None,
            }
            match &rules.audience {
                Some(audience) => {
                    validation.set_audience(&[audience]);
                    validation.required_spec_claims.insert("aud".into());
                }
                None => validation.validate_aud = false,
            }
            keys.push(Key {
                kid,
                key,
                validation,
            });
        }
        if keys.is_empty() {
            return Err(AuthConfigError::new(
                "the JWK set holds no signature key".into(),
            ));
        }
        Ok(Self {
            keys,
            cache: scc::HashCache::with_capacity_and_hasher(
                0,
                CACHE_CAPACITY,
                foldhash::fast::RandomState::default(),
            ),
        })
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The principal `token` names, verified once and then remembered until
    /// it expires. `principals` gives a subject the rate of the principal of
    /// its name.
    pub fn verify(&self, token: &str, principals: &Principals) -> Result<Arc<Principal>, Refused> {
        if let Some(found) = self.remembered(token) {
            return found;
        }
        metrics::counter!("orderflow_jwt_verifications_total").increment(1);
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(e.kind()))?;
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
        .ok_or(Refused::UnknownKey)?;
        if !key.validation.algorithms.contains(&header.alg) {
            return Err(Refused::WrongAlgorithm);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map_err(|e| refused(e.kind()))?
            .claims;
        if claims.sub.is_empty() || claims.sub.chars().count() > 128 {
            return Err(Refused::MissingClaim);
        }
        let principal = Arc::new(Principal::new(
            Arc::from(claims.sub.as_str()),
            Scopes::from_claim(&claims.scope),
            principals.limit_named(&claims.sub),
        ));
        // Full: the least recently used entry makes room (`put` evicts it).
        let _ = self.cache.put_sync(
            Box::from(token),
            Verified {
                principal: Arc::clone(&principal),
                expires: claims.exp,
            },
        );
        Ok(principal)
    }

    /// The principal of `token` if it was verified before: `None` if it
    /// was not, an error if it has expired since.
    pub fn remembered(&self, token: &str) -> Option<Result<Arc<Principal>, Refused>> {
        let now = now();
        self.cache.read_sync(token, |_, verified| {
            if now <= verified.expires.saturating_add(LEEWAY_SECONDS) {
                Ok(Arc::clone(&verified.principal))
            } else {
                Err(Refused::Expired)
            }
        })
    }

    /// How many verified tokens are remembered (for tests of the cache).
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

fn refused(kind: &ErrorKind) -> Refused {
    match kind {
        ErrorKind::InvalidSignature => Refused::BadSignature,
        ErrorKind::ExpiredSignature => Refused::Expired,
        ErrorKind::ImmatureSignature => Refused::NotYetValid,
        ErrorKind::InvalidIssuer => Refused::WrongIssuer,
        ErrorKind::InvalidAudience => Refused::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            Refused::MissingClaim
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => Refused::WrongAlgorithm,
        _ => Refused::Malformed,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use test_support::jwt::{KEY_A, KEY_B, jwk_set, now, unsigned};

    use super::{Jwks, JwtRules, Refused};
    use crate::auth::Scope;
    use crate::auth::principals::Principals;

    fn rules() -> JwtRules {
        JwtRules {
            issuer: Some("https://issuer.test".into()),
            audience: Some("orderflow".into()),
        }
    }

    fn claims(sub: &str) -> serde_json::Value {
        json!({"sub": sub, "scope": "orders:read openid", "iss": "https://issuer.test",
               "aud": "orderflow", "exp": now() + 600, "nbf": now() - 10})
    }

    #[test]
    fn a_good_token_is_verified_once_then_remembered() {
        let jwks = Jwks::parse(&jwk_set(&[KEY_A]), &rules()).unwrap();
        let token = KEY_A.sign(&claims("reporting"));
        let principal = jwks.verify(&token, &Principals::default()).unwrap();
        assert_eq!(&**principal.name(), "reporting");
        assert!(principal.scopes().contains(Scope::OrdersRead));
        assert!(!principal.scopes().contains(Scope::OrdersWrite));
        assert_eq!(jwks.cached(), 1);
        let again = jwks.verify(&token, &Principals::default()).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&principal, &again),
            "the second call is a cache hit"
        );
    }

    #[test]
    fn every_forgery_and_every_wrong_claim_is_refused_for_what_it_is() {
        let jwks = Jwks::parse(&jwk_set(&[KEY_A]), &rules()).unwrap();
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims("x");
            change(&mut c);
            KEY_A.sign(&c)
        };
        let cases = [
            (with(&|c| c["exp"] = json!(now() - 3600)), Refused::Expired),
            (
                with(&|c| c["nbf"] = json!(now() + 3600)),
                Refused::NotYetValid,
            ),
            (
                with(&|c| c["iss"] = json!("https://other.test")),
                Refused::WrongIssuer,
            ),
            (
                with(&|c| c["aud"] = json!("another-service")),
                Refused::WrongAudience,
            ),
            (
                with(&|c| drop(c.as_object_mut().unwrap().remove("sub"))),
                Refused::MissingClaim,
            ),
            (
                KEY_B.sign_as(KEY_A.kid, &claims("x")),
                Refused::BadSignature,
            ),
            (KEY_B.sign(&claims("x")), Refused::UnknownKey),
            // `none` is no algorithm of jsonwebtoken's: the header itself
            // does not parse.
            (unsigned(KEY_A.kid, &claims("x")), Refused::Malformed),
            (KEY_A.forge_hs256(&claims("x")), Refused::WrongAlgorithm),
            ("a.b.c".to_owned(), Refused::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(
                jwks.verify(&token, &Principals::default()).unwrap_err(),
                expected
            );
        }
        assert_eq!(jwks.cached(), 0, "nothing refused is remembered");
    }

    #[test]
    fn a_set_that_cannot_be_used_is_refused_naming_the_key() {
        let error = |text: &str| {
            Jwks::parse(text, &JwtRules::default())
                .unwrap_err()
                .to_string()
        };
        assert!(error("{}").contains("not a JWK set"));
        assert!(error(r#"{"keys": []}"#).contains("no signature key"));
        assert!(
            error(r#"{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}"#)
                .contains("keys[0] (kid \"h\"): a symmetric (`oct`) key needs its `alg`")
        );
        let mut rsa = serde_json::to_value(KEY_A.jwk()).unwrap();
        rsa["alg"] = json!("HS256");
        let text = json!({"keys": [rsa]}).to_string();
        assert!(
            error(&text).contains("does not fit the key's type"),
            "{}",
            error(&text)
        );
    }
}
