//! Named principals: the `ORDERFLOW_CREDENTIALS` file's entries, each with
//! the SHA-256 of its bearer token, its scopes, an optional rate and an
//! optional client-certificate name.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{AuthConfigError, Scope, Scopes};

/// Who is calling: a principal of the credentials file, or a JWT's subject.
#[derive(Debug)]
pub struct Principal {
    name: Arc<str>,
    scopes: Scopes,
    limit: Option<Arc<Limit>>,
}

impl Principal {
    pub(super) fn new(name: Arc<str>, scopes: Scopes, limit: Option<Arc<Limit>>) -> Self {
        Self {
            name,
            scopes,
            limit,
        }
    }

    /// Its name (the audit trail's `principal`).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its scopes.
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    /// Its rate limit, if it has one.
    pub(super) fn limit(&self) -> Option<&Arc<Limit>> {
        self.limit.as_ref()
    }
}

/// A principal's rate: `rate` as written, and the limiter (GCRA: one
/// atomic compare-and-swap per call) that enforces it.
#[derive(Debug)]
pub struct Limit {
    /// As the file wrote it (`200/s`): a reload that keeps it keeps the
    /// limiter, and with it the principal's current budget.
    rate: String,
    pub(super) limiter: DefaultDirectRateLimiter,
}

impl Limit {
    /// The rate as written (`200/s`).
    pub fn rate(&self) -> &str {
        &self.rate
    }
}

/// `N/s`, `N/m` or `N/h` (also `sec`, `second`, `min`, `minute`, `hour`),
/// N >= 1: N calls per period, up to N at once.
pub fn parse_rate(rate: &str) -> Result<Quota, String> {
    let (count, period) = rate
        .split_once('/')
        .ok_or_else(|| format!("{rate:?} is not COUNT/PERIOD (e.g. \"200/s\")"))?;
    let count: NonZeroU32 = count
        .trim()
        .parse()
        .map_err(|_| format!("{rate:?}: the count must be a whole number from 1"))?;
    match period.trim() {
        "s" | "sec" | "second" => Ok(Quota::per_second(count)),
        "m" | "min" | "minute" => Ok(Quota::per_minute(count)),
        "h" | "hour" => Ok(Quota::per_hour(count)),
        other => Err(format!("{rate:?}: unknown period {other:?} (s, m or h)")),
    }
}

/// The credentials file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, alias = "principal")]
    principals: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    rate: Option<String>,
    #[serde(default)]
    cert_san: Option<String>,
}

/// The principals of one version of the credentials file.
#[derive(Debug, Default)]
pub struct Principals {
    /// Each principal with a token, and its token's digest.
    by_token: Vec<([u8; 32], Arc<Principal>)>,
    /// Each principal with a client-certificate name, and that name.
    by_san: Vec<(String, Arc<Principal>)>,
    /// Every principal, by name (JWT subjects take the rate of the principal
    /// of their name).
    all: Vec<Arc<Principal>>,
}

impl Principals {
    /// Parses a credentials file (TOML, `[[principals]]` entries). Limiters
    /// of `previous` principals whose name and rate are unchanged are kept.
    pub fn parse(text: &str, previous: &Principals) -> Result<Self, AuthConfigError> {
        let file: File = toml::from_str(text).map_err(|e| AuthConfigError::new(e.to_string()))?;
        let mut principals = Principals::default();
        let mut names = HashSet::new();
        for (i, entry) in file.principals.into_iter().enumerate() {
            let at = |what: String| AuthConfigError::new(format!("principals[{i}]: {what}"));
            if entry.name.is_empty()
                || entry.name.chars().count() > 128
                || entry.name.chars().any(char::is_control)
            {
                return Err(at("`name` must be 1 to 128 printable characters".into()));
            }
            if !names.insert(entry.name.clone()) {
                return Err(at(format!("`name` {:?} is given twice", entry.name)));
            }
            let mut scopes = Vec::with_capacity(entry.scopes.len());
            for scope in &entry.scopes {
                scopes.push(Scope::from_name(scope).ok_or_else(|| {
                    at(format!(
                        "unknown scope {scope:?} (known: {})",
                        Scope::ALL
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?);
            }
            let limit = match &entry.rate {
                None => None,
                Some(rate) => {
                    let quota = parse_rate(rate).map_err(|e| at(format!("`rate`: {e}")))?;
                    Some(previous.limit_of(&entry.name, rate).unwrap_or_else(|| {
                        Arc::new(Limit {
                            rate: rate.clone(),
                            limiter: RateLimiter::direct(quota),
                        })
                    }))
                }
            };
            let name: Arc<str> = Arc::from(entry.name.as_str());
            let principal = Arc::new(Principal::new(name, scopes.into_iter().collect(), limit));
            if entry.token_sha256.is_none() && entry.cert_san.is_none() {
                return Err(at(
                    "needs `token_sha256` or `cert_san` (or both): nothing could name it".into(),
                ));
            }
            if let Some(hex) = &entry.token_sha256 {
                let digest = parse_digest(hex)
                    .ok_or_else(|| at("`token_sha256` must be 64 hexadecimal digits".into()))?;
                if principals.by_token.iter().any(|(d, _)| *d == digest) {
                    return Err(at("`token_sha256` is another principal's too".into()));
                }
                principals.by_token.push((digest, Arc::clone(&principal)));
            }
            if let Some(san) = entry.cert_san {
                if principals.by_san.iter().any(|(s, _)| *s == san) {
                    return Err(at(format!("`cert_san` {san:?} is another principal's too")));
                }
                principals.by_san.push((san, Arc::clone(&principal)));
            }
            principals.all.push(principal);
        }
        Ok(principals)
    }

    /// Adds the `ORDERFLOW_AUTH_TOKEN` token as principal `name`, with every
    /// scope; refused if the file names a principal `name` too.
    pub(super) fn add_token(&mut self, name: &str, token: &str) -> Result<(), AuthConfigError> {
        if self.all.iter().any(|p| &*p.name == name) {
            return Err(AuthConfigError::new(format!(
                "principal {name:?} is ORDERFLOW_AUTH_TOKEN's while that is set; rename it"
            )));
        }
        let principal = Arc::new(Principal::new(Arc::from(name), Scopes::all(), None));
        self.by_token.push((digest(token), Arc::clone(&principal)));
        self.all.push(principal);
        Ok(())
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// The principal whose token is `token`. Every digest is compared, each
    /// in constant time, so the time taken says nothing of which (or how
    /// much of one) matched.
    pub fn by_token(&self, token: &str) -> Option<&Arc<Principal>> {
        let presented = digest(token);
        let mut found = None;
        for (digest, principal) in &self.by_token {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found
    }

    /// The principal a client certificate's SAN names.
    pub fn by_san<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> Option<&Arc<Principal>> {
        names.find_map(|name| {
            self.by_san
                .iter()
                .find(|(san, _)| san == name)
                .map(|(_, principal)| principal)
        })
    }

    /// The limit of the principal `name`, if it has one (a JWT subject's).
    pub fn limit_named(&self, name: &str) -> Option<Arc<Limit>> {
        self.all
            .iter()
            .find(|p| &*p.name == name)
            .and_then(|p| p.limit.clone())
    }

    fn limit_of(&self, name: &str, rate: &str) -> Option<Arc<Limit>> {
        self.limit_named(name).filter(|limit| limit.rate == rate)
    }
}

/// SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{Principals, digest, parse_rate};
    use crate::auth::Scope;

    fn hex(token: &str) -> String {
        digest(token).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_file_names_principals_by_token_and_by_certificate() {
        let text = format!(
            r#"
            [[principals]]
            name = "checkout"
            token_sha256 = "{}"
            scopes = ["orders:read", "orders:write"]
            rate = "200/s"

            [[principals]]
            name = "reporting"
            token_sha256 = "{}"
            scopes = ["orders:read"]
            cert_san = "spiffe://example.org/reporting"
            "#,
            hex("checkout-token"),
            hex("reporting-token").to_uppercase(),
        );
        let set = Principals::parse(&text, &Principals::default()).unwrap();
        assert_eq!(set.len(), 2);
        let checkout = set.by_token("checkout-token").unwrap();
        assert_eq!(&**checkout.name(), "checkout");
        assert!(checkout.scopes().contains(Scope::OrdersWrite));
        assert!(checkout.limit().is_some());
        assert!(set.by_token("checkout-token ").is_none());
        let reporting = set
            .by_san(["other", "spiffe://example.org/reporting"].into_iter())
            .unwrap();
        assert!(!reporting.scopes().contains(Scope::OrdersWrite));
        assert!(set.by_token("reporting-token").is_some());

        // A reload that keeps a rate keeps its limiter (and budget).
        let again = Principals::parse(&text, &set).unwrap();
        let (old, new) = (set.limit_named("checkout"), again.limit_named("checkout"));
        assert!(std::sync::Arc::ptr_eq(&old.unwrap(), &new.unwrap()));
    }

    #[test]
    fn mistakes_are_refused_naming_the_entry() {
        let h = hex("t");
        for (text, expected) in [
            (
                "[[principals]]\nname = \"a\"\nscopes = []\n",
                "principals[0]: needs `token_sha256`",
            ),
            (
                &*format!(
                    "[[principals]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nscopes = [\"orders:admin\"]\n"
                ),
                "unknown scope \"orders:admin\"",
            ),
            (
                "[[principals]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n",
                "64 hexadecimal digits",
            ),
            (
                &*format!(
                    "[[principals]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nrate = \"fast\"\n"
                ),
                "COUNT/PERIOD",
            ),
            (
                &*format!(
                    "[[principals]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\n[[principals]]\nname = \"a\"\ncert_san = \"x\"\n"
                ),
                "principals[1]: `name` \"a\" is given twice",
            ),
            (
                &*format!("[[principals]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nscope = []\n"),
                "unknown field `scope`",
            ),
            ("[[principals]\n", "TOML"),
        ] {
            let error = Principals::parse(text, &Principals::default())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(expected) || (expected == "TOML" && !error.is_empty()),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn the_auth_token_joins_as_a_principal_of_its_own_name_only() {
        let file = format!(
            "[[principals]]\nname = \"auth-token\"\ntoken_sha256 = \"{}\"\n",
            hex("t")
        );
        let mut taken = Principals::parse(&file, &Principals::default()).unwrap();
        let error = taken
            .add_token("auth-token", "shared")
            .unwrap_err()
            .to_string();
        assert!(error.contains("rename it"), "{error}");
        let mut free = Principals::default();
        free.add_token("auth-token", "shared").unwrap();
        assert_eq!(&**free.by_token("shared").unwrap().name(), "auth-token");
    }

    #[test]
    fn rates_read_as_written() {
        assert!(parse_rate("200/s").is_ok());
        assert!(parse_rate("10 / min").is_ok());
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("5/day").is_err());
    }
}
