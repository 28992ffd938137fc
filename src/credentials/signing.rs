//! Token signing keys: generated and parsed with AWS-LC, each parsed once,
//! with the public JWK derived from the parsed key itself.

use anyhow::Context as _;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, RSAKeyParameters, RSAKeyType, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The algorithms tokens can be signed with. RS256 is the default, for
/// B2Core clients; ES256 and EdDSA sign 30 to 60 times faster (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum SigningAlgorithm {
    #[value(name = "RS256")]
    RS256,
    #[value(name = "ES256")]
    ES256,
    #[value(name = "EdDSA")]
    EdDSA,
}

impl SigningAlgorithm {
    pub fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::RS256 => Algorithm::RS256,
            SigningAlgorithm::ES256 => Algorithm::ES256,
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl std::fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::EdDSA => "EdDSA",
        })
    }
}

/// RSA keys below this size are refused (NIST SP 800-57: 112-bit security),
/// and above the larger one too (slow to sign, and nobody needs them).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

enum Private {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One signing key, parsed, with its JWK and `kid` (the JWK's RFC 7638 thumbprint).
pub struct Signer {
    algorithm: SigningAlgorithm,
    private: Private,
    jwk: Jwk,
    kid: String,
    decoding: DecodingKey,
    rng: SystemRandom,
}

impl Signer {
    /// A new private key for `algorithm`, as PKCS#8 PEM (AWS-LC, from the OS's randomness).
    pub fn generate(algorithm: SigningAlgorithm) -> anyhow::Result<SecretString> {
        let failed = |_| anyhow::anyhow!("generating a {algorithm} key failed");
        let der = match algorithm {
            SigningAlgorithm::RS256 => {
                let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(failed)?;
                key.as_der().map_err(failed)?.as_ref().to_vec()
            }
            SigningAlgorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|key| key.to_pkcs8v1())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::EdDSA => Ed25519KeyPair::generate()
                .and_then(|key| key.to_pkcs8v1())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
        };
        Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)).into())
    }

    /// Parses a PKCS#8 PEM key for `algorithm` (for RS256 also PKCS#1,
    /// `RSA PRIVATE KEY`, of 2048 to 8192 bits). Line endings may be CRLF.
    pub fn from_pem(algorithm: SigningAlgorithm, pem: &SecretString) -> anyhow::Result<Signer> {
        let block =
            pem::parse(pem.expose_secret().as_bytes()).context("the signing key is not PEM")?;
        let der = block.contents();
        let refused = |e: aws_lc_rs::error::KeyRejected| {
            anyhow::anyhow!("the signing key is not a usable {algorithm} key: {e}")
        };
        let private = match (algorithm, block.tag()) {
            (SigningAlgorithm::RS256, "PRIVATE KEY") => {
                Private::Rsa(aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(refused)?)
            }
            (SigningAlgorithm::RS256, "RSA PRIVATE KEY") => {
                Private::Rsa(aws_lc_rs::rsa::KeyPair::from_der(der).map_err(refused)?)
            }
            (SigningAlgorithm::ES256, "PRIVATE KEY") => Private::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(refused)?,
            ),
            (SigningAlgorithm::EdDSA, "PRIVATE KEY") => {
                Private::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(refused)?)
            }
            (_, other) => anyhow::bail!("the signing key is a {other:?}, not a {algorithm} key"),
        };
        if let Private::Rsa(key) = &private {
            let bits = key.public_modulus_len() * 8;
            anyhow::ensure!(
                RSA_BITS.contains(&bits),
                "the RSA signing key has {bits} bits; 2048 to 8192 are accepted"
            );
        }
        let mut jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(match algorithm {
                    SigningAlgorithm::RS256 => KeyAlgorithm::RS256,
                    SigningAlgorithm::ES256 => KeyAlgorithm::ES256,
                    SigningAlgorithm::EdDSA => KeyAlgorithm::EdDSA,
                }),
                ..Default::default()
            },
            algorithm: public_parameters(&private)?,
        };
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        let decoding = DecodingKey::from_jwk(&jwk).context("the JWK of the signing key")?;
        Ok(Signer {
            algorithm,
            private,
            jwk,
            kid,
            decoding,
            rng: SystemRandom::new(),
        })
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, as the JWKS serves it.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The public key, for verifying.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// `header.claims.signature`, each base64url. `jsonwebtoken::encode`
    /// would parse the key again for every signature (45% of an RS256
    /// signature's cost here); the compact form itself is this simple.
    pub fn sign(&self, header: &Header, claims: &impl Serialize) -> anyhow::Result<String> {
        anyhow::ensure!(
            header.alg == self.algorithm.jwt(),
            "a {} key cannot sign {:?}",
            self.algorithm,
            header.alg
        );
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let failed = |_| anyhow::anyhow!("signing a token failed");
        let signature = match &self.private {
            Private::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    message.as_bytes(),
                    &mut signature,
                )
                .map_err(failed)?;
                signature
            }
            Private::Ecdsa(key) => key
                .sign(&self.rng, message.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Private::Ed25519(key) => key.sign(message.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The public half as JWK parameters, read from the parsed key.
fn public_parameters(private: &Private) -> anyhow::Result<AlgorithmParameters> {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    Ok(match private {
        Private::Rsa(key) => {
            let public = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(key.public_key());
            AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: b64(&public.n),
                e: b64(&public.e),
            })
        }
        Private::Ecdsa(key) => {
            // Uncompressed SEC1 point: 0x04, x, y (32 bytes each on P-256).
            let point = key.public_key().as_ref();
            anyhow::ensure!(
                point.len() == 65 && point[0] == 4,
                "unexpected P-256 public key encoding"
            );
            AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: b64(&point[1..33]),
                y: b64(&point[33..]),
            })
        }
        Private::Ed25519(key) => AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: b64(key.public_key().as_ref()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Validation;

    #[test]
    fn each_algorithm_signs_what_its_own_jwk_verifies() {
        for algorithm in [
            SigningAlgorithm::RS256,
            SigningAlgorithm::ES256,
            SigningAlgorithm::EdDSA,
        ] {
            let pem = Signer::generate(algorithm).unwrap();
            let signer = Signer::from_pem(algorithm, &pem).unwrap();
            let claims = serde_json::json!({ "sub": "someone", "exp": 4_000_000_000u64 });
            let mut header = Header::new(algorithm.jwt());
            header.kid = Some(signer.kid().to_owned());
            let token = signer.sign(&header, &claims).unwrap();
            // Verified through a JWK as a stranger would get it (serialised and read back).
            let jwk: Jwk =
                serde_json::from_str(&serde_json::to_string(signer.jwk()).unwrap()).unwrap();
            let key = DecodingKey::from_jwk(&jwk).unwrap();
            let mut validation = Validation::new(algorithm.jwt());
            validation.required_spec_claims.clear();
            let decoded = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
                .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
            assert_eq!(decoded.claims["sub"], "someone");
            assert_eq!(jwk.common.key_id.as_deref(), Some(signer.kid()));
            // The same key parsed again has the same kid; another key another.
            assert_eq!(
                Signer::from_pem(algorithm, &pem).unwrap().kid(),
                signer.kid()
            );
            let other = Signer::from_pem(algorithm, &Signer::generate(algorithm).unwrap()).unwrap();
            assert_ne!(other.kid(), signer.kid());
            // A key signs only its own algorithm, and parses only as its own.
            let wrong = Header::new(if algorithm == SigningAlgorithm::RS256 {
                Algorithm::ES256
            } else {
                Algorithm::RS256
            });
            assert!(signer.sign(&wrong, &claims).is_err());
            for other in [
                SigningAlgorithm::RS256,
                SigningAlgorithm::ES256,
                SigningAlgorithm::EdDSA,
            ] {
                assert_eq!(
                    Signer::from_pem(other, &pem).is_ok(),
                    other == algorithm,
                    "{algorithm} key read as {other}"
                );
            }
        }
    }

    #[test]
    fn pkcs1_and_crlf_rsa_keys_read_as_the_same_key() {
        let pem = Signer::generate(SigningAlgorithm::RS256).unwrap();
        let pkcs8 = pem::parse(pem.expose_secret()).unwrap();
        let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8.contents()).unwrap();
        let kid = Signer::from_pem(SigningAlgorithm::RS256, &pem)
            .unwrap()
            .kid()
            .to_owned();
        // The same key as PKCS#1 (`RSA PRIVATE KEY`), the form openssl genrsa -traditional writes.
        let pkcs1 = {
            let der: aws_lc_rs::encoding::Pkcs8V1Der = key.as_der().unwrap();
            // PKCS#8 wraps PKCS#1: the inner OCTET STRING is the last TLV of the sequence.
            let inner = pkcs8_inner(der.as_ref());
            pem::encode(&pem::Pem::new("RSA PRIVATE KEY", inner))
        };
        let read = Signer::from_pem(SigningAlgorithm::RS256, &pkcs1.into()).unwrap();
        assert_eq!(read.kid(), kid);
        let crlf = pem.expose_secret().replace('\n', "\r\n");
        assert_eq!(
            Signer::from_pem(SigningAlgorithm::RS256, &crlf.into())
                .unwrap()
                .kid(),
            kid
        );
        for junk in [
            "",
            "not pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(Signer::from_pem(SigningAlgorithm::RS256, &junk.to_owned().into()).is_err());
        }
    }

    /// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`.
    fn pkcs8_inner(der: &[u8]) -> Vec<u8> {
        // SEQUENCE { INTEGER 0, SEQUENCE { OID, NULL }, OCTET STRING { RSAPrivateKey } }
        fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
            let tag = input[0];
            let (len, header) = match input[1] {
                n if n < 0x80 => (n as usize, 2),
                0x81 => (input[2] as usize, 3),
                0x82 => (((input[2] as usize) << 8) | input[3] as usize, 4),
                other => panic!("length form {other:#x}"),
            };
            (tag, &input[header..header + len], &input[header + len..])
        }
        let (_, body, _) = tlv(der);
        let (_, _, rest) = tlv(body); // version
        let (_, _, rest) = tlv(rest); // algorithm
        let (tag, octets, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        octets.to_vec()
    }
}
