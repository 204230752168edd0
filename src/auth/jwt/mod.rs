//! JWT auth tokens, as etcd's `--auth-token jwt,...` provider issues and checks them.
//!
//! etcd (3.4: `auth/jwt.go`, `auth/options.go`, `auth/store.go: NewTokenProvider`)
//! picks its token provider from the `--auth-token` flag: `simple` (random strings
//! kept in memory) or `jwt,pub-key=..,priv-key=..,sign-method=..,ttl=..`. A JWT
//! carries the claims `username`, `revision` (the auth store revision when it was
//! issued) and `exp` (unix seconds, now + ttl), signed with the member's key, so
//! any member holding the public key can check it without shared state. A member
//! given only `pub-key` is verify-only: it checks tokens but cannot issue them.
//!
//! This module parses the flag ([`parse_auth_token`]), loads the PEM keys and
//! issues and checks tokens ([`JwtProvider`]). Signing and verification are
//! `jsonwebtoken`'s (ring); key parsing and claim checks follow etcd's Go code.
//!
//! Where cairn differs, it refuses at start what etcd would accept: ES512 (P-521)
//! and RSA keys under 2048 bits (ring has neither), a `ttl` that is not positive,
//! an SEC1 EC key without its public key, and a pub-key/priv-key pair that does not
//! match (etcd 3.5+ refuses it too; 3.4's check never fires).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{crypto, Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::Value;

use keys::{asymmetric_keys, b64url};

/// etcd's default token lifetime when `ttl` is not given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// The token provider selected by `--auth-token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// `simple`: opaque random tokens (options after `simple,` are ignored, as in etcd).
    Simple,
    /// `jwt,...`: signed JWTs.
    Jwt(JwtOptions),
}

/// The options of `--auth-token jwt,...` (files are read by [`JwtProvider::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    /// `sign-method`: the JWS algorithm, required.
    pub sign_method: Algorithm,
    /// `pub-key`: PEM public key or certificate file.
    pub pub_key: Option<PathBuf>,
    /// `priv-key`: PEM private key file (for HS*, the raw file is the shared secret).
    pub priv_key: Option<PathBuf>,
    /// `ttl`: token lifetime, a Go duration; [`DEFAULT_TTL`] when absent or empty.
    pub ttl: Duration,
    /// Option names etcd does not know. etcd logs a warning and goes on; so should the caller.
    pub unknown: Vec<String>,
}

const SIGN_METHODS: &str =
    "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, HS256, HS384, HS512";

/// Parses an `--auth-token` value as etcd 3.4 does: the type, then `,key=value` options
/// (any order; a malformed or repeated option is an error).
pub fn parse_auth_token(flag: &str) -> Result<TokenKind, String> {
    let mut items = flag.split(',');
    let kind = items.next().unwrap_or_default();
    let mut opts = BTreeMap::new();
    for item in items {
        let (k, v) = match item.split('=').collect::<Vec<_>>()[..] {
            [k, v] => (k, v),
            _ => return Err(format!("--auth-token: option {item:?} is not key=value")),
        };
        if opts.insert(k, v).is_some() {
            return Err(format!("--auth-token: option {k:?} given twice"));
        }
    }
    match kind {
        "simple" => Ok(TokenKind::Simple),
        "jwt" => jwt_options(&opts).map(TokenKind::Jwt),
        "" => Err("--auth-token: empty token type (expected simple or jwt,...)".into()),
        other => Err(format!(
            "--auth-token: unknown token type {other:?} (expected simple or jwt)"
        )),
    }
}

fn jwt_options(opts: &BTreeMap<&str, &str>) -> Result<JwtOptions, String> {
    let get = |k: &str| opts.get(k).copied().filter(|v| !v.is_empty());
    let ttl = match get("ttl") {
        None => DEFAULT_TTL,
        Some(s) => match parse_go_duration(s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => return Err(format!("--auth-token: ttl {s:?} must be positive")),
            Err(e) => return Err(format!("--auth-token: ttl: {e}")),
        },
    };
    let sign_method = match get("sign-method").unwrap_or_default() {
        "" => return Err(format!("--auth-token: jwt needs sign-method (one of {SIGN_METHODS})")),
        "ES512" => return Err("--auth-token: sign-method ES512 (ECDSA P-521) is not supported by cairn (no P-521 in its crypto library)".into()),
        m => match m.parse() {
            Ok(Algorithm::EdDSA) | Err(_) => {
                return Err(format!("--auth-token: unsupported sign-method {m:?} (one of {SIGN_METHODS})"))
            }
            Ok(alg) => alg,
        },
    };
    let (pub_key, priv_key) = (
        get("pub-key").map(PathBuf::from),
        get("priv-key").map(PathBuf::from),
    );
    if is_hmac(sign_method) && priv_key.is_none() {
        return Err("--auth-token: sign-method HS* needs priv-key (the shared secret file)".into());
    }
    if pub_key.is_none() && priv_key.is_none() {
        return Err("--auth-token: jwt needs pub-key and/or priv-key".into());
    }
    let known = ["sign-method", "pub-key", "priv-key", "ttl"];
    let unknown = opts
        .keys()
        .filter(|k| !known.contains(k))
        .map(|k| k.to_string())
        .collect();
    Ok(JwtOptions {
        sign_method,
        pub_key,
        priv_key,
        ttl,
        unknown,
    })
}

/// Parses a Go `time.ParseDuration` string ("300ms", "5m", "1h30m", "1.5h"); a
/// negative duration is an error here.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = |r: &str| r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        let int_len = digits(rest);
        let int: u128 =
            rest[..int_len]
                .parse()
                .or(if int_len == 0 { Ok(0) } else { Err(err()) })?;
        rest = &rest[int_len..];
        let (mut frac, mut scale, mut frac_len) = (0u128, 1u128, 0);
        if let Some(r) = rest.strip_prefix('.') {
            frac_len = digits(r);
            for d in r[..frac_len].bytes().take(18) {
                (frac, scale) = (frac * 10 + u128::from(d - b'0'), scale * 10);
            }
            rest = &r[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(err());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total = int
            .checked_mul(unit)
            .and_then(|v| v.checked_add(total))
            .ok_or_else(err)?
            + frac * unit / scale;
        if total > i64::MAX as u128 {
            return Err(err());
        }
    }
    if neg && total > 0 {
        return Err(format!("negative duration {s:?}"));
    }
    Ok(Duration::from_nanos(total as u64))
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Issues and checks etcd-compatible JWTs with one key and algorithm.
#[derive(Clone)]
pub struct JwtProvider {
    alg: Algorithm,
    ttl: Duration,
    signer: Option<EncodingKey>,
    verifier: DecodingKey,
}

impl std::fmt::Debug for JwtProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (alg, ttl, verify_only) = (self.alg, self.ttl, self.verify_only());
        write!(
            f,
            "JwtProvider {{ {alg:?}, ttl {ttl:?}, verify_only {verify_only} }}"
        )
    }
}

impl JwtProvider {
    /// Reads the key files named by `opts` and builds the provider (etcd's
    /// `newTokenProviderJWT`); errors start with `--auth-token:` and name the option.
    pub fn new(opts: &JwtOptions) -> Result<Self, String> {
        let read = |name: &str, path: &Option<PathBuf>| match path {
            Some(p) => {
                (std::fs::read(p).map(Some)).map_err(|e| format!("--auth-token: {name} {p:?}: {e}"))
            }
            None => Ok(None),
        };
        let (public, private) = (
            read("pub-key", &opts.pub_key)?,
            read("priv-key", &opts.priv_key)?,
        );
        let (public, private) = (public.as_deref(), private.as_deref());
        Self::from_pem(opts.sign_method, public, private, opts.ttl)
            .map_err(|e| format!("--auth-token: {e}"))
    }

    /// Builds a provider from PEM bytes: `public` (SubjectPublicKeyInfo or X.509
    /// certificate) and/or `private` (RSA: PKCS#1 or PKCS#8; EC: SEC1 or PKCS#8).
    /// Without `private` it is verify-only. For HS*, `private` is the raw secret.
    pub fn from_pem(
        alg: Algorithm,
        public: Option<&[u8]>,
        private: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<Self, String> {
        let (signer, verifier) = if is_hmac(alg) {
            let secret = private
                .filter(|b| !b.is_empty())
                .ok_or("HS* needs a non-empty priv-key")?;
            (
                Some(EncodingKey::from_secret(secret)),
                DecodingKey::from_secret(secret),
            )
        } else {
            asymmetric_keys(alg, public, private)?
        };
        if let Some(signer) = &signer {
            // A key ring refuses is reported now rather than at the first Authenticate.
            let probe =
                crypto::sign(b"cairn", signer, alg).map_err(|e| format!("priv-key: {e}"))?;
            if !crypto::verify(&probe, b"cairn", &verifier, alg).unwrap_or(false) {
                return Err("priv-key: a probe signature does not verify".into());
            }
        }
        Ok(Self {
            alg,
            ttl,
            signer,
            verifier,
        })
    }

    /// The token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// True when the provider has no private key: it checks tokens but cannot issue them.
    pub fn verify_only(&self) -> bool {
        self.signer.is_none()
    }

    /// Issues a token for `username` at auth `revision`, expiring now + ttl (etcd's
    /// `tokenJWT.assign`). Fails on a verify-only provider.
    pub fn assign(&self, username: &str, revision: u64) -> Result<String, String> {
        let exp = (SystemTime::now() + self.ttl).duration_since(UNIX_EPOCH);
        let exp = exp.map_or(0, |d| d.as_secs());
        self.sign_claims(
            &serde_json::json!({"exp": exp, "revision": revision, "username": username}),
        )
    }

    /// Signs arbitrary claims; header and claims are byte for byte what Go's
    /// `jwt.SignedString` writes (sorted keys, encoding/json's HTML-safe escapes).
    fn sign_claims(&self, claims: &Value) -> Result<String, String> {
        let err = "auth: token signing attempted with verify-only key (no priv-key)";
        let key = self.signer.as_ref().ok_or(err)?;
        let header = serde_json::json!({"alg": self.alg, "typ": "JWT"}).to_string();
        let mut json = claims.to_string();
        for c in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
            json = json.replace(c, &format!("\\u{:04x}", c as u32));
        }
        let message = format!("{}.{}", b64url(header.as_bytes()), b64url(json.as_bytes()));
        let signature =
            crypto::sign(message.as_bytes(), key, self.alg).map_err(|e| e.to_string())?;
        Ok(format!("{message}.{signature}"))
    }

    /// Checks a token (etcd's `tokenJWT.info`): algorithm and signature, then `exp`
    /// (and `iat`, `nbf` if present) as golang-jwt v4 does. Returns (username, revision),
    /// None for anything invalid.
    pub fn info(&self, token: &str) -> Option<(String, u64)> {
        let mut validation = Validation::new(self.alg);
        validation.required_spec_claims.clear();
        (validation.validate_exp, validation.validate_aud) = (false, false);
        type Claims = serde_json::Map<String, Value>;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.verifier, &validation)
            .ok()?
            .claims;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as f64;
        // golang-jwt: an absent or zero time claim is not checked; a non-number fails.
        let time_ok = |name, ok: fn(f64, f64) -> bool| match claims.get(name).map(Value::as_f64) {
            None | Some(Some(0.0)) => true,
            Some(Some(t)) => ok(now, t.floor()),
            Some(None) => false,
        };
        let valid = |now, exp| now < exp;
        let reached = |now, t| now >= t;
        if !(time_ok("exp", valid) && time_ok("iat", reached) && time_ok("nbf", reached)) {
            return None;
        }
        let username = claims.get("username")?.as_str()?.to_string();
        let rev = claims.get("revision")?;
        let rev = rev
            .as_u64()
            .or_else(|| rev.as_f64().filter(|r| *r >= 0.0).map(|r| r as u64))?;
        Some((username, rev))
    }
}

/// The RSA or EC keys for `alg`: the signer if `private` is given, and the verifier
/// (from `private` when given, which must then match `public`).
mod keys;
#[cfg(test)]
mod tests;
