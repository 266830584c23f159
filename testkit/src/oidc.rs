//! A real OpenID Connect issuer for tests, on a free loopback port: the
//! discovery document and the JWKS over HTTP, with an RSA (RS256) and an EC
//! P-256 (ES256) key the test makes, tokens signed with them, key rotation,
//! and a count of the JWKS fetches.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The audience the issuer's tokens are for, unless a test says otherwise.
pub const AUDIENCE: &str = "chat-test-client";

/// A signing key of the issuer.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// Its public half as a JWK.
    jwk: Value,
}

impl SigningKey {
    fn rsa(kid: &str) -> SigningKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        let public = pair.public_key();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        SigningKey {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&pkcs1_of_pkcs8(pair.as_der().expect("PKCS#8").as_ref())),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64(public.modulus().big_endian_without_leading_zero()),
                "e": b64(public.exponent().big_endian_without_leading_zero()),
            }),
        }
    }

    fn ec(kid: &str) -> SigningKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8");
        // The uncompressed point: 0x04, x (32 bytes), y (32 bytes).
        let point = pair.public_key().as_ref();
        SigningKey {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }
}

/// The RSAPrivateKey (PKCS#1) a PKCS#8 PrivateKeyInfo wraps (RFC 5208:
/// SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }),
/// which is what jsonwebtoken signs RS256 with.
fn pkcs1_of_pkcs8(der: &[u8]) -> Vec<u8> {
    // One DER element at `at`: (tag, content start, content end).
    let element = |at: usize| -> (u8, usize, usize) {
        let tag = der[at];
        let first = der[at + 1] as usize;
        let (length, start) = match first {
            0..0x80 => (first, at + 2),
            _ => {
                let bytes = first & 0x7f;
                let length = der[at + 2..at + 2 + bytes]
                    .iter()
                    .fold(0, |n, b| (n << 8) | *b as usize);
                (length, at + 2 + bytes)
            }
        };
        (tag, start, start + length)
    };
    let (_, inside, _) = element(0);
    let (_, _, after_version) = element(inside);
    let (_, _, after_algorithm) = element(after_version);
    let (tag, start, end) = element(after_algorithm);
    assert_eq!(tag, 0x04, "PKCS#8 holds the key in an OCTET STRING");
    der[start..end].to_vec()
}

#[derive(Default)]
struct Published {
    keys: Vec<SigningKey>,
    jwks_fetches: u32,
    rotations: u32,
}

/// The issuer; its server stops when it is dropped.
pub struct OidcIssuer {
    issuer: String,
    published: Arc<Mutex<Published>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OidcIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OidcIssuer {
    /// Serves an issuer with an RSA key `rsa-0` and an EC key `ec-0`.
    pub async fn start() -> OidcIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address: SocketAddr = listener.local_addr().expect("address");
        let issuer = format!("http://{address}");
        let published = Arc::new(Mutex::new(Published {
            keys: vec![SigningKey::rsa("rsa-0"), SigningKey::ec("ec-0")],
            ..Published::default()
        }));
        let state = (issuer.clone(), published.clone());
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(jwks))
            .with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OidcIssuer {
            issuer,
            published,
            server,
        }
    }

    /// The issuer URL: the tokens' `iss`, and where discovery starts.
    pub fn url(&self) -> &str {
        &self.issuer
    }

    /// A token for `user` (as `sub`) for [`AUDIENCE`], valid for 10 minutes,
    /// signed with the current RSA key.
    pub fn token(&self, user: &str) -> String {
        self.sign(&self.claims(user), Algorithm::RS256)
    }

    /// The claims of [`Self::token`], for a test to change.
    pub fn claims(&self, user: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({ "iss": self.issuer, "aud": AUDIENCE, "sub": user, "iat": now, "exp": now + 600 })
    }

    /// `claims` signed with the current key of algorithm `alg` (RS256 or ES256).
    pub fn sign(&self, claims: &Value, alg: Algorithm) -> String {
        let published = self.published.lock().unwrap();
        let key = published
            .keys
            .iter()
            .find(|key| key.alg == alg)
            .expect("the issuer has a key of that algorithm");
        let mut header = Header::new(alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
    }

    /// Replaces the keys by new ones with new kids (an IdP's key rotation);
    /// the new RSA key's kid.
    pub fn rotate_keys(&self) -> String {
        let mut published = self.published.lock().unwrap();
        published.rotations += 1;
        let n = published.rotations;
        published.keys = vec![SigningKey::rsa(&format!("rsa-{n}")), SigningKey::ec(&format!("ec-{n}"))];
        format!("rsa-{n}")
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> u32 {
        self.published.lock().unwrap().jwks_fetches
    }
}

type Shared = (String, Arc<Mutex<Published>>);

async fn discovery(State((issuer, _)): State<Shared>) -> Json<Value> {
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/keys"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(State((_, published)): State<Shared>) -> Json<Value> {
    let mut published = published.lock().unwrap();
    published.jwks_fetches += 1;
    let keys: Vec<Value> = published.keys.iter().map(|key| key.jwk.clone()).collect();
    Json(json!({ "keys": keys }))
}
