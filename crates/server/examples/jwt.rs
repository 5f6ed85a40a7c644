//! Makes what a test of JWT auth needs from an RSA private key (PEM, e.g.
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out key.pem`):
//!
//! ```text
//! cargo run -p server --example jwt -- jwks key.pem KID > jwks.json
//! cargo run -p server --example jwt -- token key.pem KID SUBJECT "SCOPES" ISSUER AUDIENCE [TTL_SECONDS]
//! ```
//!
//! `jwks` prints the JWK set (the public key, `alg: RS256`) for
//! `ORDERFLOW_JWT_JWKS`; `token` prints a JWT signed RS256 by the key for
//! `authorization: Bearer <JWT>`. For tests and trials: in production the
//! identity provider holds the key and publishes the set.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: jwt jwks KEY.pem KID | jwt token KEY.pem KID SUBJECT SCOPES ISSUER AUDIENCE [TTL_SECONDS]";
    let (command, rest) = args.split_first().ok_or_else(|| anyhow::anyhow!(usage))?;
    let (path, kid) = match rest {
        [path, kid, ..] => (path, kid),
        _ => anyhow::bail!(usage),
    };
    let pem = std::fs::read(path)?;
    let key = EncodingKey::from_rsa_pem(&pem)?;
    match (command.as_str(), rest) {
        ("jwks", [_, _]) => {
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256)?;
            jwk.common.key_id = Some(kid.clone());
            println!(
                "{}",
                serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] })?
            );
        }
        ("token", [_, _, subject, scopes, issuer, audience, ttl @ ..]) => {
            let ttl: u64 = match ttl {
                [] => 3600,
                [ttl] => ttl.parse()?,
                _ => anyhow::bail!(usage),
            };
            let now = jsonwebtoken::get_current_timestamp();
            let claims = serde_json::json!({
                "sub": subject, "scope": scopes, "iss": issuer, "aud": audience,
                "iat": now, "nbf": now, "exp": now + ttl,
            });
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(kid.clone());
            println!("{}", jsonwebtoken::encode(&header, &claims, &key)?);
        }
        _ => anyhow::bail!(usage),
    }
    Ok(())
}
