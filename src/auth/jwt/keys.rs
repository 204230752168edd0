//! The keys of a JWT provider: PEM files as Go reads them (the first block,
//! its label unchecked), RSA (PKCS#1 or PKCS#8) and EC (SEC1 or PKCS#8) private
//! keys, public keys (SubjectPublicKeyInfo or a certificate), and the check that
//! a pair matches. ring signs only with PKCS#8 EC keys, so an SEC1 key is
//! rewrapped; the DER is read with a small reader of its own (the few
//! structures above; no general ASN.1).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// A public key, normalised for comparison: RSA (n, e) without leading zeros, or an
/// EC curve (OID body) and uncompressed point.
#[derive(PartialEq)]
enum PubKey {
    Rsa(Vec<u8>, Vec<u8>),
    Ec(Vec<u8>, Vec<u8>),
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

pub(super) fn asymmetric_keys(
    alg: Algorithm,
    public: Option<&[u8]>,
    private: Option<&[u8]>,
) -> Result<(Option<EncodingKey>, DecodingKey), String> {
    let rsa = !matches!(alg, Algorithm::ES256 | Algorithm::ES384);
    let kind = if rsa { "an RSA" } else { "an EC" };
    let public = public.map(|pem| {
        let key = parse_public(&pem_der("pub-key", pem)?);
        key.ok_or_else(|| "pub-key: not a public key or certificate".to_string())
    });
    let private = private.map(|pem| {
        let der = pem_der("priv-key", pem)?;
        let key = if rsa {
            parse_rsa_private(&der)
        } else {
            parse_ec_private(&der)
        };
        key.ok_or_else(|| format!("priv-key: not {kind} private key"))
    });
    let (public, (signer, derived)) = (public.transpose()?, private.transpose()?.unzip());
    if public.is_some() && derived.is_some() && public != derived {
        return Err("pub-key and priv-key don't match".into());
    }
    let curve = if alg == Algorithm::ES256 {
        OID_P256
    } else {
        OID_P384
    };
    let verifier = match derived
        .or(public)
        .ok_or("jwt needs pub-key and/or priv-key")?
    {
        PubKey::Rsa(n, e) if rsa => {
            if n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize) < 2048 {
                return Err("RSA keys under 2048 bits are not supported".into());
            }
            DecodingKey::from_rsa_raw_components(&n, &e)
        }
        PubKey::Ec(c, point) if !rsa && c == curve => DecodingKey::from_ec_der(&point),
        PubKey::Ec(..) if !rsa => return Err(format!("the EC key's curve is not {alg:?}'s")),
        _ => return Err(format!("pub-key is not {kind} key")),
    };
    Ok((signer, verifier))
}

pub(super) fn b64url(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The DER of the first PEM block, as Go's `pem.Decode` takes it (the label is not checked).
fn pem_der(name: &str, pem: &[u8]) -> Result<Vec<u8>, String> {
    x509_parser::pem::parse_x509_pem(pem)
        .map(|(_, p)| p.contents)
        .map_err(|e| format!("{name}: not a PEM file ({e})"))
}

/// A DER reader over the content of one constructed value.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }
    fn next(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&t, rest) = self.0.split_first()?;
        let (&l, rest) = rest.split_first()?;
        let (len, rest) = if l < 0x80 {
            (l as usize, rest)
        } else {
            let n = (l & 0x7f) as usize;
            (n <= 4 && rest.len() >= n).then_some(())?;
            (
                rest[..n].iter().fold(0, |a, b| a << 8 | *b as usize),
                &rest[n..],
            )
        };
        (t == tag && rest.len() >= len).then_some(())?;
        self.0 = &rest[len..];
        Some(&rest[..len])
    }
    fn uint(&mut self) -> Option<Vec<u8>> {
        let v = self.next(0x02)?;
        Some(v[v.iter().position(|b| *b != 0).unwrap_or(v.len())..].to_vec())
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len().to_be_bytes();
    let len = &len[len.iter().position(|b| *b != 0).unwrap_or(len.len() - 1)..];
    let mut out = vec![tag];
    if content.len() >= 0x80 {
        out.push(0x80 | len.len() as u8);
    }
    out.extend_from_slice(len);
    out.extend_from_slice(content);
    out
}

/// SubjectPublicKeyInfo, or an X.509 certificate's (Go tries PKIX, then a certificate).
fn parse_public(der: &[u8]) -> Option<PubKey> {
    let spki = |der: &[u8]| -> Option<PubKey> {
        let mut d = Der(Der(der).next(0x30)?);
        let mut alg = Der(d.next(0x30)?);
        let (oid, bits) = (alg.next(0x06)?, d.next(0x03)?.split_first()?.1);
        match oid {
            OID_RSA => {
                let mut k = Der(Der(bits).next(0x30)?);
                Some(PubKey::Rsa(k.uint()?, k.uint()?))
            }
            OID_EC => Some(PubKey::Ec(alg.next(0x06)?.to_vec(), bits.to_vec())),
            _ => None,
        }
    };
    spki(der).or_else(|| {
        spki(
            x509_parser::parse_x509_certificate(der)
                .ok()?
                .1
                .tbs_certificate
                .subject_pki
                .raw,
        )
    })
}

/// PKCS#1 RSAPrivateKey, or PKCS#8 around one: the PKCS#1 DER as jsonwebtoken signs with it.
fn parse_rsa_private(der: &[u8]) -> Option<(EncodingKey, PubKey)> {
    let pkcs1 = |der: &[u8]| -> Option<(EncodingKey, PubKey)> {
        let mut d = Der(Der(der).next(0x30)?);
        (d.uint()?.is_empty()).then_some(())?;
        Some((
            EncodingKey::from_rsa_der(der),
            PubKey::Rsa(d.uint()?, d.uint()?),
        ))
    };
    pkcs1(der).or_else(|| pkcs1(pkcs8(der, OID_RSA)?.1))
}

/// PKCS#8 PrivateKeyInfo for key algorithm `oid`: (the algorithm's OID parameter, the key).
fn pkcs8<'a>(der: &'a [u8], oid: &[u8]) -> Option<(Option<&'a [u8]>, &'a [u8])> {
    let mut d = Der(Der(der).next(0x30)?);
    d.uint()?;
    let mut alg = Der(d.next(0x30)?);
    (alg.next(0x06)? == oid).then_some(())?;
    Some((alg.next(0x06), d.next(0x04)?))
}

/// SEC1 ECPrivateKey, or PKCS#8 around one; re-wrapped as the PKCS#8 ring reads.
fn parse_ec_private(der: &[u8]) -> Option<(EncodingKey, PubKey)> {
    let sec1 = |der: &[u8], curve: Option<&[u8]>| -> Option<(EncodingKey, PubKey)> {
        let mut d = Der(Der(der).next(0x30)?);
        (d.uint()? == [1]).then_some(())?;
        let scalar = d.next(0x04)?;
        let curve = if d.peek() == Some(0xa0) {
            Der(d.next(0xa0)?).next(0x06)?
        } else {
            curve?
        };
        // The public key is optional in SEC1; Go derives it, cairn needs it present.
        let point = Der(d.next(0xa1)?).next(0x03)?.split_first()?.1;
        let size = if curve == OID_P256 { 32 } else { 48 };
        let scalar = &scalar[scalar.len().saturating_sub(size)..];
        let mut padded = vec![0; size - scalar.len()];
        padded.extend_from_slice(scalar);
        let inner = [
            tlv(0x02, &[1]),
            tlv(0x04, &padded),
            tlv(0xa1, &tlv(0x03, &[&[0], point].concat())),
        ]
        .concat();
        let alg = [tlv(0x06, OID_EC), tlv(0x06, curve)].concat();
        let p8 = tlv(
            0x30,
            &[
                tlv(0x02, &[0]),
                tlv(0x30, &alg),
                tlv(0x04, &tlv(0x30, &inner)),
            ]
            .concat(),
        );
        Some((
            EncodingKey::from_ec_der(&p8),
            PubKey::Ec(curve.to_vec(), point.to_vec()),
        ))
    };
    sec1(der, None).or_else(|| {
        let (curve, key) = pkcs8(der, OID_EC)?;
        sec1(key, curve)
    })
}
