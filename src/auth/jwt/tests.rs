//! The JWT provider against etcd's behaviour (fixtures: tests/fixtures/jwt).
use super::keys::b64url;
use super::*;
use jsonwebtoken::Algorithm::*;
use serde_json::json;

const HOUR: Duration = Duration::from_secs(3600);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture")
}
fn provider(alg: Algorithm, public: Option<&[u8]>, private: Option<&[u8]>) -> JwtProvider {
    JwtProvider::from_pem(alg, public, private, HOUR).expect("provider")
}
fn rsa(alg: Algorithm) -> JwtProvider {
    provider(
        alg,
        Some(&fixture("rsa2048.pub")),
        Some(&fixture("rsa2048.key")),
    )
}
/// A fresh P-256 key: (key pair, SubjectPublicKeyInfo PEM, PKCS#8 PEM).
fn ec_key() -> (rcgen::KeyPair, Vec<u8>, Vec<u8>) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let (public, private) = (kp.public_key_pem().into(), kp.serialize_pem().into());
    (kp, public, private)
}
fn round_trip(p: &JwtProvider) -> String {
    let token = p.assign("alice", 42).expect("assign");
    assert_eq!(p.info(&token), Some(("alice".to_string(), 42)));
    assert_eq!(p.info("aaa"), None);
    token
}
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn round_trip_with_each_key_form() {
    for (alg, public, private) in [
        (RS256, "rsa2048.pub", "rsa2048.key"),
        (RS512, "rsa2048.crt", "rsa2048.pkcs8.key"),
        (PS256, "rsa2048.pub", "rsa2048.pkcs8.key"),
        (PS384, "rsa2048.crt", "rsa2048.key"),
    ] {
        round_trip(&provider(
            alg,
            Some(&fixture(public)),
            Some(&fixture(private)),
        ));
    }
    round_trip(&provider(RS256, None, Some(&fixture("rsa2048.key")))); // priv-key alone
    round_trip(&provider(ES256, None, Some(&fixture("ec256-sec1.key")))); // SEC1, as openssl
    let (kp, public, private) = ec_key();
    let token = round_trip(&provider(ES256, Some(&public), Some(&private)));
    let params = rcgen::CertificateParams::new(vec!["cairn".to_string()]).expect("params");
    let cert = params.self_signed(&kp).expect("cert").pem();
    let by_cert = provider(ES256, Some(cert.as_bytes()), None);
    assert_eq!(by_cert.info(&token), Some(("alice".to_string(), 42)));
}

#[test]
fn verify_only_provider_checks_but_does_not_assign() {
    let verifier = provider(PS256, Some(&fixture("rsa2048.crt")), None);
    assert!(verifier.verify_only() && !rsa(PS256).verify_only());
    let token = rsa(PS256).assign("bob", 7).expect("assign");
    assert_eq!(verifier.info(&token), Some(("bob".to_string(), 7)));
    let err = verifier.assign("bob", 7).expect_err("verify-only");
    assert!(err.contains("verify-only"), "{err}");
}

#[test]
fn tampered_token_refused() {
    let p = rsa(RS256);
    let token = p.assign("alice", 42).expect("assign");
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64url(br#"{"exp":99999999999,"revision":42,"username":"root"}"#);
    assert_eq!(p.info(&format!("{}.{forged}.{}", parts[0], parts[2])), None);
    let flipped = if parts[2].as_bytes()[20] == b'A' {
        "B"
    } else {
        "A"
    };
    let sig = format!("{}{flipped}{}", &parts[2][..20], &parts[2][21..]);
    assert_eq!(p.info(&format!("{}.{}.{sig}", parts[0], parts[1])), None);
    assert_eq!(p.info(&token[..token.len() - 2]), None);
    assert_eq!(p.info(&format!("{token}.")), None);
}

#[test]
fn expiry_and_claims_checked_as_golang_jwt_does() {
    let (_, public, private) = ec_key();
    let p = provider(ES256, Some(&public), Some(&private));
    let check = |c: Value| p.info(&p.sign_claims(&c).expect("sign"));
    let (now, ok) = (now(), Some(("a".to_string(), 1)));
    assert_eq!(
        check(json!({"exp": now - 10, "revision": 1, "username": "a"})),
        None
    );
    assert_eq!(
        check(json!({"exp": now, "revision": 1, "username": "a"})),
        None
    );
    assert_eq!(
        check(json!({"exp": now + 9, "revision": 1, "username": "a"})),
        ok
    );
    assert_eq!(
        check(json!({"exp": "soon", "revision": 1, "username": "a"})),
        None
    );
    assert_eq!(
        check(json!({"exp": 0, "nbf": now + 9, "revision": 1, "username": "a"})),
        None
    );
    assert_eq!(
        check(json!({"iat": now + 9, "revision": 1, "username": "a"})),
        None
    );
    // golang-jwt v4 requires no exp (etcd always sets one)
    assert_eq!(check(json!({"revision": 1.0, "username": "a"})), ok);
    assert_eq!(
        check(json!({"exp": now + 9, "revision": "1", "username": "a"})),
        None
    );
    assert_eq!(check(json!({"exp": now + 9, "revision": 1})), None);
}

#[test]
fn token_from_another_key_refused() {
    let ((_, pub_a, priv_a), (_, pub_b, priv_b)) = (ec_key(), ec_key());
    let token = provider(ES256, Some(&pub_a), Some(&priv_a)).assign("alice", 1);
    let token = token.expect("assign");
    assert_eq!(
        provider(ES256, Some(&pub_b), Some(&priv_b)).info(&token),
        None
    );
    assert_eq!(provider(ES256, Some(&pub_b), None).info(&token), None);
}

#[test]
fn token_with_another_algorithm_refused() {
    let rs256 = rsa(RS256);
    assert_eq!(rs256.info(&rsa(PS256).assign("a", 1).expect("ps256")), None);
    assert_eq!(rsa(RS512).info(&rs256.assign("a", 1).expect("rs256")), None);
    // HMAC keyed with the public key PEM: the classic algorithm-confusion forgery
    let hs256 = provider(HS256, None, Some(&fixture("rsa2048.pub")));
    assert_eq!(rs256.info(&hs256.assign("root", 1).expect("hs256")), None);
    let claims = format!(r#"{{"revision":1,"username":"root","exp":{}}}"#, now() + 60);
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none"}"#),
        b64url(claims.as_bytes())
    );
    assert_eq!(rs256.info(&none), None);
}

#[test]
fn claims_are_etcds() {
    let before = now();
    let token = rsa(RS256).assign("al<i>ce", 7).expect("assign");
    let parts: Vec<Vec<u8>> = token.split('.').map(b64url_decode).collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims: serde_json::Map<String, Value> = serde_json::from_slice(&parts[1]).expect("json");
    assert_eq!(
        claims.keys().collect::<Vec<_>>(),
        ["exp", "revision", "username"]
    );
    assert_eq!(
        (&claims["username"], &claims["revision"]),
        (&json!("al<i>ce"), &json!(7))
    );
    let exp = claims["exp"].as_u64().expect("exp is unix seconds");
    assert!((before + 3600..=now() + 3600).contains(&exp), "{exp}");
    let text = String::from_utf8(parts[1].clone()).expect("utf8");
    let go = format!(r#"{{"exp":{exp},"revision":7,"username":"al\u003ci\u003ece"}}"#);
    assert_eq!(text, go); // what Go's encoding/json writes
    assert_eq!(parts[2].len(), 256); // an RSA-2048 signature
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (mut acc, mut bits, mut out) = (0u32, 0, Vec::new());
    for c in s.bytes() {
        let v = abc.iter().position(|a| *a == c).expect("base64url") as u32;
        (acc, bits) = ((acc << 6 | v) & 0xffff, bits + 6);
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn auth_token_flag() {
    assert_eq!(parse_auth_token("simple"), Ok(TokenKind::Simple));
    assert_eq!(
        parse_auth_token("simple,ignored=yes"),
        Ok(TokenKind::Simple)
    );
    let (pub_key, priv_key) = (Some("/k.pub".into()), Some("/k.key".into()));
    let opts = JwtOptions {
        sign_method: RS256,
        pub_key,
        priv_key,
        ttl: DEFAULT_TTL,
        unknown: vec![],
    };
    let flag = "jwt,pub-key=/k.pub,priv-key=/k.key,sign-method=RS256";
    assert_eq!(parse_auth_token(flag), Ok(TokenKind::Jwt(opts)));
    for (flag, alg, ttl, unknown) in [
        ("jwt,sign-method=ES256,ttl=10s,pub-key=k", ES256, 10, ""),
        (
            "jwt,ttl=1h30m,priv-key=k,sign-method=PS512",
            PS512,
            5400,
            "",
        ),
        ("jwt,priv-key=k,sign-method=HS256,ttl=", HS256, 300, ""),
        (
            "jwt,priv-key=k,sign-method=RS384,ttl=1.5m,color=red",
            RS384,
            90,
            "color",
        ),
    ] {
        let Ok(TokenKind::Jwt(o)) = parse_auth_token(flag) else {
            panic!("{flag}")
        };
        let got = (o.sign_method, o.ttl, o.unknown.join(","));
        assert_eq!(
            got,
            (alg, Duration::from_secs(ttl), unknown.into()),
            "{flag}"
        );
    }
    for (flag, err) in [
        ("", "empty token type"),
        ("opaque", "unknown token type"),
        ("jwt,", "not key=value"),
        ("jwt,pub-key=a=b,sign-method=RS256", "not key=value"),
        ("jwt,pub-key=a,pub-key=b,sign-method=RS256", "given twice"),
        ("jwt,pub-key=k", "needs sign-method"),
        ("jwt,pub-key=k,sign-method=", "needs sign-method"),
        ("jwt,pub-key=k,sign-method=rs256", "unsupported sign-method"),
        ("jwt,pub-key=k,sign-method=EdDSA", "unsupported sign-method"),
        ("jwt,pub-key=k,sign-method=ES512", "P-521"),
        ("jwt,sign-method=RS256,ttl=1m", "pub-key and/or priv-key"),
        ("jwt,pub-key=k,sign-method=HS256", "needs priv-key"),
        ("jwt,pub-key=k,sign-method=RS256,ttl=5", "missing unit"),
        ("jwt,pub-key=k,sign-method=RS256,ttl=5d", "unknown unit"),
        ("jwt,pub-key=k,sign-method=RS256,ttl=0", "must be positive"),
        ("jwt,pub-key=k,sign-method=RS256,ttl=-5m", "negative"),
    ] {
        let e = parse_auth_token(flag).expect_err(flag);
        assert!(e.contains(err), "{flag}: {e}");
    }
}

#[test]
fn go_durations() {
    for (s, ms) in [
        ("0", 0),
        ("300ms", 300),
        ("1h30m", 5_400_000),
        ("1.5h", 5_400_000),
    ]
    .into_iter()
    .chain([(".5s", 500), ("+2h45m10s", 9_910_000), ("1000\u{b5}s", 1)])
    {
        assert_eq!(parse_go_duration(s), Ok(Duration::from_millis(ms)), "{s}");
    }
    for s in [
        "",
        "-",
        "1",
        ".",
        ".s",
        "1x",
        "h",
        "99999999999999h",
        "1.5.5s",
    ] {
        assert!(parse_go_duration(s).is_err(), "{s}");
    }
}

#[test]
fn key_errors_name_the_problem() {
    let ((_, ec_pub, ec_priv), (_, other_pub, _)) = (ec_key(), ec_key());
    let rsa_pub = fixture("rsa2048.pub");
    for (alg, public, private, want) in [
        (RS256, Some(&ec_pub[..]), None, "pub-key is not an RSA key"),
        (
            RS256,
            None,
            Some(&ec_priv[..]),
            "priv-key: not an RSA private key",
        ),
        (ES256, Some(&rsa_pub[..]), None, "pub-key is not an EC key"),
        (ES384, Some(&ec_pub[..]), Some(&ec_priv[..]), "curve"),
        (
            ES256,
            Some(&other_pub[..]),
            Some(&ec_priv[..]),
            "don't match",
        ),
        (RS256, Some(&b"hello"[..]), None, "pub-key: not a PEM file"),
        (HS256, None, Some(&b""[..]), "non-empty priv-key"),
    ] {
        let e = JwtProvider::from_pem(alg, public, private, HOUR).expect_err(want);
        assert!(e.contains(want), "{want}: {e}");
    }
    let flag = "jwt,priv-key=/nonexistent,sign-method=RS256";
    let Ok(TokenKind::Jwt(opts)) = parse_auth_token(flag) else {
        panic!("{flag}")
    };
    let e = JwtProvider::new(&opts).expect_err("missing file");
    assert!(
        e.starts_with(r#"--auth-token: priv-key "/nonexistent": "#),
        "{e}"
    );
    let ok = format!(
        "jwt,sign-method=RS256,pub-key={FIXTURES}rsa2048.crt,ttl=2m,priv-key={FIXTURES}rsa2048.key"
    );
    let Ok(TokenKind::Jwt(opts)) = parse_auth_token(&ok) else {
        panic!("{ok}")
    };
    let p = JwtProvider::new(&opts).expect("provider from files");
    assert_eq!(p.ttl(), Duration::from_secs(120));
    round_trip(&p);
}
