//! JWTs for the auth tests: two throw-away RSA keys (`keys/`), their JWK
//! set, tokens they sign, and the forgeries a server must refuse.

#![allow(
    clippy::expect_used,
    reason = "test support: a fixed key that does not load fails the test"
)]

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

/// A test signing key and its `kid`.
#[derive(Debug, Clone, Copy)]
pub struct TestKey {
    /// The key id in the JWK set and in tokens' headers.
    pub kid: &'static str,
    private_pem: &'static str,
    /// The public key, PEM (SPKI), as a key server would publish it.
    pub public_pem: &'static str,
}

/// The first test key.
pub const KEY_A: TestKey = TestKey {
    kid: "test-a",
    private_pem: include_str!("../keys/rsa-a.pem"),
    public_pem: include_str!("../keys/rsa-a.pub.pem"),
};

/// The second test key (a rotation's new key, or "another key").
pub const KEY_B: TestKey = TestKey {
    kid: "test-b",
    private_pem: include_str!("../keys/rsa-b.pem"),
    public_pem: include_str!("../keys/rsa-b.pub.pem"),
};

impl TestKey {
    fn encoding(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).expect("test key")
    }

    /// Its public JWK, with `kid` and `alg: RS256`.
    #[must_use]
    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding(), Algorithm::RS256).expect("jwk");
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk
    }

    /// `claims` signed RS256 by this key, its `kid` in the header.
    #[must_use]
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.kid, claims)
    }

    /// `claims` signed by this key under another `kid`.
    #[must_use]
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding()).expect("sign")
    }

    /// The HS256/RS256 confusion: `claims` MACed with HS256 under this
    /// key's *public* key (its PEM, as published) as the secret, naming
    /// this key's `kid`. A server that let the token choose the algorithm
    /// would verify it with the public key it holds.
    #[must_use]
    pub fn forge_hs256(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(self.public_pem.as_bytes()).expect("secret"),
        )
        .expect("sign")
    }
}

/// A JWK set of `keys`, as the server's file holds it.
#[must_use]
pub fn jwk_set(keys: &[TestKey]) -> String {
    serde_json::to_string_pretty(&JwkSet {
        keys: keys.iter().map(TestKey::jwk).collect(),
    })
    .expect("JSON")
}

/// `claims` with `alg: none` and no signature.
#[must_use]
pub fn unsigned(kid: &str, claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    )
}

/// Seconds since the epoch.
#[must_use]
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
