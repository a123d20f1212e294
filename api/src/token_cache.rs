//! A short-lived cache of authenticated tokens, so that most requests skip the token lookup
//! (a trip to the blocking pool and a query). SPEC 2 lets a revoked token work for up to
//! 5 s on every replica; an entry lives [`TTL`], and never past the token's own expiry, so
//! a revocation or an expiry is seen in time. Only tokens that authenticated are kept
//! (an unknown token costs a lookup every time, as before), keyed by their SHA-256, never
//! by the token itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::auth::Principal;
use sha2::{Digest, Sha256};

/// How long an authenticated token is trusted without asking PostgreSQL again: well inside
/// the 5 s SPEC 2 allows a revocation to take.
pub const TTL: Duration = Duration::from_secs(2);

/// At most this many tokens are cached; a full cache is emptied (a burst of distinct tokens
/// only costs lookups, never memory).
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// The principal of `token` if it authenticated less than [`TTL`] ago (and has not
    /// expired since).
    pub fn get(&self, token: &str) -> Option<Principal> {
        let key = key(token);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some((principal, until)) if Instant::now() < *until => Some(principal.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `principal` for `token`, until [`TTL`] from now or the token's expiry.
    pub fn put(&self, token: &str, principal: Principal, expires_at: Option<DateTime<Utc>>) {
        let mut ttl = TTL;
        if let Some(expiry) = expires_at {
            match (expiry - Utc::now()).to_std() {
                Ok(left) => ttl = ttl.min(left),
                Err(_) => return,
            }
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key(token), (principal, Instant::now() + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            instance_id: 1,
            org_id: None,
            subject_user_id: None,
            can_read: true,
            can_write: false,
            can_read_instance: false,
            can_write_instance: false,
        }
    }

    #[test]
    fn an_entry_lives_no_longer_than_the_ttl_or_the_token() {
        let cache = TokenCache::default();
        assert!(cache.get("ce_a").is_none());
        cache.put("ce_a", principal(), None);
        assert_eq!(cache.get("ce_a"), Some(principal()));
        assert!(cache.get("ce_b").is_none());
        // A token that has expired is not kept; one about to expire is kept only until then.
        cache.put(
            "ce_old",
            principal(),
            Some(Utc::now() - chrono::Duration::seconds(1)),
        );
        assert!(cache.get("ce_old").is_none());
        cache.put(
            "ce_soon",
            principal(),
            Some(Utc::now() + chrono::Duration::milliseconds(50)),
        );
        assert!(cache.get("ce_soon").is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.get("ce_soon").is_none());
    }
}
