//! Verification codes: how they are made (CSPRNG, uniform), how a client's attempt is parsed,
//! and how they are kept (a keyed hash to verify against, an AEAD-encrypted copy for the mail).

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::error::{Rejection, ids};

type HmacSha256 = Hmac<Sha256>;

/// Length and alphabet of one kind of code (contact email, OTP Email).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSpec {
    length: usize,
    alphabet: Vec<char>,
}

impl CodeSpec {
    /// `alphabet` must have at least two distinct characters; duplicates are dropped so that
    /// every character is equally likely.
    pub fn new(length: usize, alphabet: &str) -> Result<Self, String> {
        if !(1..=64).contains(&length) {
            return Err("length must be between 1 and 64".into());
        }
        let mut chars: Vec<char> = Vec::new();
        for c in alphabet.chars() {
            if c.is_control() || c.is_whitespace() {
                return Err("alphabet must not contain spaces or control characters".into());
            }
            if !chars.contains(&c) {
                chars.push(c);
            }
        }
        if chars.len() < 2 {
            return Err("alphabet needs at least two distinct characters".into());
        }
        Ok(CodeSpec {
            length,
            alphabet: chars,
        })
    }

    /// A new code from the thread-local CSPRNG; `random_range` samples without modulo bias.
    pub fn generate(&self) -> String {
        let mut rng = rand::rng();
        (0..self.length)
            .map(|_| self.alphabet[rng.random_range(0..self.alphabet.len())])
            .collect()
    }
}

/// A code as a client submitted it, within the length limits of its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedCode(String);

impl SubmittedCode {
    pub fn parse(raw: &str, field: &str, max_len: usize) -> Result<Self, Rejection> {
        let len = raw.chars().count();
        if len == 0 || len > max_len {
            return Err(Rejection::invalid(
                ids::CODE_INVALID,
                format!("{field} must be 1 to {max_len} characters"),
            ));
        }
        Ok(SubmittedCode(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The server's keys for codes, derived from `CODE_ENCRYPTION_KEY`, and those of the keys
/// it replaced (`CODE_ENCRYPTION_KEYS_PREVIOUS`): new hashes and ciphertexts use the current
/// key; verifying and decrypting also accept the previous ones, so a rotation fails no code.
#[derive(Clone)]
pub struct CodeKeys {
    current: KeySet,
    previous: Vec<KeySet>,
}

/// The two keys derived from one master key.
#[derive(Clone)]
struct KeySet {
    hash_key: [u8; 32],
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for CodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeKeys(..)")
    }
}

/// Bytes of the random nonce stored in front of each ciphertext.
const NONCE_LEN: usize = 24;

impl KeySet {
    fn derive(master: &[u8; 32]) -> Self {
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac =
                <HmacSha256 as Mac>::new_from_slice(master).expect("HMAC takes any key length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        KeySet {
            hash_key: derive(b"contact-email/code-hash/v1"),
            cipher: XChaCha20Poly1305::new(&derive(b"contact-email/code-aead/v1").into()),
        }
    }

    fn mac(&self, email_id: i64, code: &str) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        mac.update(&email_id.to_be_bytes());
        mac.update(code.as_bytes());
        mac
    }
}

impl CodeKeys {
    /// The 32-byte master key of standard base64; the error never repeats the input.
    pub fn master_from_base64(encoded: &str) -> Result<[u8; 32], String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "must be standard base64".to_string())?;
        bytes
            .try_into()
            .map_err(|_| "must decode to exactly 32 bytes".to_string())
    }

    /// From standard base64 of 32 bytes, without previous keys.
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        Ok(Self::from_master(&Self::master_from_base64(encoded)?))
    }

    pub fn from_master(master: &[u8; 32]) -> Self {
        Self::with_previous(master, &[])
    }

    /// The current key and the keys it replaced, newest first.
    pub fn with_previous(current: &[u8; 32], previous: &[[u8; 32]]) -> Self {
        CodeKeys {
            current: KeySet::derive(current),
            previous: previous.iter().map(KeySet::derive).collect(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &KeySet> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// Keyed hash of a code, bound to the address row it verifies.
    pub fn hash(&self, email_id: i64, code: &str) -> Vec<u8> {
        self.current
            .mac(email_id, code)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Constant-time comparison of a submitted code with the stored hash, under the current
    /// key and each previous one.
    pub fn verify(&self, email_id: i64, code: &str, stored_hash: &[u8]) -> bool {
        self.all()
            .any(|k| k.mac(email_id, code).verify_slice(stored_hash).is_ok())
    }

    /// Encrypts a code for one mail job (the job id is authenticated with it).
    pub fn encrypt(&self, job_id: i64, code: &str) -> Vec<u8> {
        self.seal(&job_id.to_be_bytes(), code.as_bytes())
    }

    /// Decrypts a job's code with the current key or a previous one.
    pub fn decrypt(&self, job_id: i64, stored: &[u8]) -> Result<String, String> {
        let plain = self.open(&job_id.to_be_bytes(), stored).ok_or_else(|| {
            "code cannot be decrypted with CODE_ENCRYPTION_KEY or a previous key".to_string()
        })?;
        String::from_utf8(plain).map_err(|_| "decrypted code is not UTF-8".to_string())
    }

    /// Encrypts a secret at rest under the current key, bound to `context` (what the secret
    /// belongs to): a ciphertext copied to another row does not decrypt there.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .expect("XChaCha20-Poly1305 encryption in memory cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`CodeKeys::seal`] made for `context`, with the current key or a
    /// previous one; `None` when no key opens it (or it was made for another context).
    pub fn open(&self, context: &[u8], stored: &[u8]) -> Option<Vec<u8>> {
        if stored.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        self.all().find_map(|k| {
            k.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: context,
                    },
                )
                .ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_use_only_the_alphabet_and_the_length() {
        let spec = CodeSpec::new(8, "0123456789").unwrap();
        for _ in 0..200 {
            let code = spec.generate();
            assert_eq!(code.len(), 8);
            assert!(code.chars().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn every_character_of_the_alphabet_is_used_about_equally() {
        let spec = CodeSpec::new(64, "ABC").unwrap();
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            for c in spec.generate().chars() {
                counts[(c as u8 - b'A') as usize] += 1;
            }
        }
        // 19200 draws, expectation 6400 each; 5 sigma is about 330.
        for n in counts {
            assert!((6000..6800).contains(&n), "{counts:?}");
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(CodeSpec::new(0, "AB").is_err());
        assert!(CodeSpec::new(6, "AAAA").is_err());
        assert!(CodeSpec::new(6, "A B").is_err());
    }

    #[test]
    fn hash_verifies_only_the_same_code_for_the_same_row() {
        let keys = CodeKeys::from_master(&[7; 32]);
        let h = keys.hash(1, "ABC123");
        assert!(keys.verify(1, "ABC123", &h));
        assert!(!keys.verify(1, "ABC124", &h));
        assert!(!keys.verify(2, "ABC123", &h));
        assert!(!CodeKeys::from_master(&[8; 32]).verify(1, "ABC123", &h));
    }

    #[test]
    fn encryption_round_trips_and_is_bound_to_the_job() {
        let keys = CodeKeys::from_master(&[7; 32]);
        let ct = keys.encrypt(10, "12345678");
        assert!(!ct.windows(8).any(|w| w == b"12345678"));
        assert_eq!(keys.decrypt(10, &ct).unwrap(), "12345678");
        assert!(keys.decrypt(11, &ct).is_err());
        assert!(CodeKeys::from_master(&[1; 32]).decrypt(10, &ct).is_err());
    }

    #[test]
    fn a_rotated_key_still_verifies_and_decrypts_what_the_previous_one_made() {
        let old = CodeKeys::from_master(&[1; 32]);
        let h = old.hash(3, "ABC123");
        let ct = old.encrypt(9, "ABC123");
        let rotated = CodeKeys::with_previous(&[2; 32], &[[1; 32]]);
        assert!(rotated.verify(3, "ABC123", &h));
        assert!(!rotated.verify(3, "ABC124", &h));
        assert_eq!(rotated.decrypt(9, &ct).unwrap(), "ABC123");
        // New material is made with the new key only.
        let fresh = rotated.hash(3, "ABC123");
        assert!(!old.verify(3, "ABC123", &fresh));
        assert!(old.decrypt(9, &rotated.encrypt(9, "X")).is_err());
        assert!(CodeKeys::from_master(&[2; 32]).decrypt(9, &ct).is_err());
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes() {
        let short = base64::engine::general_purpose::STANDARD.encode([3u8; 31]);
        assert!(CodeKeys::from_base64(&short).is_err());
        let good = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        assert!(CodeKeys::from_base64(&good).is_ok());
        assert!(CodeKeys::from_base64("not base64!").is_err());
    }

    #[test]
    fn submitted_codes_respect_the_call_limit() {
        assert!(SubmittedCode::parse("", "verificationCode", 20).is_err());
        assert!(SubmittedCode::parse(&"x".repeat(21), "verificationCode", 20).is_err());
        assert!(SubmittedCode::parse(&"x".repeat(20), "verificationCode", 20).is_ok());
    }
}
