//! Remembers recent refresh-token rotations, so a rotation is never lost.
//!
//! Microsoft rotates the refresh token on every redeem. The host serializes
//! one login's refreshes, but a connector may still redeem the same old
//! token twice (it read its metadata before the first rotation was
//! stored); the second redeem could then fail or fork the token chain. So
//! each redeem leaves a record in the login's KV: SHA-256 of the old
//! token → the set it produced. A repeated refresh of the same old token
//! for the same scopes gets that set again without a request while its
//! access token is fresh, and after that redeems the rotated token in the
//! set instead of the spent one. Records are kept for [`TTL_SECS`], at
//! most [`MAX_RECORDS`] of them, pruned on every write; keys hold only
//! hashes, never tokens.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_sdk::kv;
use weft_sdk::tokens::TokenSet;

use crate::grant::RefreshKind;

/// How long a rotation is remembered: long enough for a connector's stale
/// second call, short enough that the stored tokens stay a small target.
pub(crate) const TTL_SECS: u64 = 3600;

/// The most rotations kept per login.
pub(crate) const MAX_RECORDS: usize = 8;

const PREFIX: &str = "rotation.";

/// One remembered rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rotation {
    /// When it happened, Unix seconds.
    pub(crate) at: u64,
    /// The scopes asked for, lowercased and sorted.
    pub(crate) scopes: Vec<String>,
    /// What it produced.
    pub(crate) tokens: TokenSet,
}

impl Rotation {
    /// A record of `tokens`, produced at `at` for `scopes`.
    pub(crate) fn new(at: u64, scopes: &[String], tokens: TokenSet) -> Self {
        Self {
            at,
            scopes: normalize(scopes),
            tokens,
        }
    }

    /// Whether it answers a repeat of the refresh for `scopes` at `now`:
    /// recent, and for the same scopes.
    pub(crate) fn answers(&self, scopes: &[String], now: u64) -> bool {
        now < self.at.saturating_add(TTL_SECS) && self.scopes == normalize(scopes)
    }
}

fn normalize(scopes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = scopes
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_ascii_lowercase)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The KV key of the rotation of raw refresh token `token` of `kind`.
pub(crate) fn key_for(kind: RefreshKind, token: &str) -> String {
    let digest = Sha256::digest(kind.wrap(token).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// Which records to delete: expired ones, then the oldest beyond
/// [`MAX_RECORDS`]. `records` are (key, time) pairs.
pub(crate) fn to_prune(records: &[(String, u64)], now: u64) -> Vec<String> {
    let mut live: Vec<&(String, u64)> = Vec::new();
    let mut prune = Vec::new();
    for record in records {
        if now >= record.1.saturating_add(TTL_SECS) {
            prune.push(record.0.clone());
        } else {
            live.push(record);
        }
    }
    // Newest first; the tail beyond the cap goes.
    live.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    prune.extend(live.iter().skip(MAX_RECORDS).map(|r| r.0.clone()));
    prune
}

/// The remembered rotation under `key`, if any. A storage failure only
/// means no shortcut.
pub(crate) fn lookup(key: &str) -> Option<Rotation> {
    match kv::get::<Rotation>(key) {
        Ok(found) => found,
        Err(error) => {
            weft_sdk::warn!("rotation record unreadable: {error}");
            None
        }
    }
}

/// Stores `rotation` under `key` and prunes old records. Failures are
/// logged: the tokens are handed out either way.
pub(crate) fn remember(key: &str, rotation: &Rotation, now: u64) {
    if let Err(error) = kv::set(key, rotation) {
        weft_sdk::warn!("rotation record not stored: {error}");
        return;
    }
    let keys = match kv::list_keys(PREFIX) {
        Ok(keys) => keys,
        Err(error) => {
            weft_sdk::warn!("rotation records not listed: {error}");
            return;
        }
    };
    let records: Vec<(String, u64)> = keys
        .into_iter()
        .map(|k| {
            // An unreadable record counts as ancient, so it goes.
            let at = kv::get::<Rotation>(&k).ok().flatten().map_or(0, |r| r.at);
            (k, at)
        })
        .collect();
    for stale in to_prune(&records, now) {
        if let Err(error) = kv::delete(&stale) {
            weft_sdk::warn!("rotation record not pruned: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(expires_at: u64) -> TokenSet {
        TokenSet {
            access_token: "a".into(),
            expires_at,
            refresh_token: Some("spa:new".into()),
            scopes: vec![],
            account_id: None,
        }
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_recent_rotation_answers_a_repeat_for_the_same_scopes() {
        let rotation = Rotation::new(1000, &scopes(&["A", "b"]), set(5000));
        // Same scopes in another order and case.
        assert!(rotation.answers(&scopes(&["B a"]), 1100));
        // Other scopes.
        assert!(!rotation.answers(&scopes(&["a"]), 1100));
        // Too late.
        assert!(!rotation.answers(&scopes(&["a", "b"]), 1000 + TTL_SECS));
    }

    #[test]
    fn keys_hash_the_token_with_its_kind() {
        let spa = key_for(RefreshKind::Spa, "rt");
        assert!(spa.starts_with(PREFIX));
        // Only the hash: 64 hex digits after the prefix.
        assert_eq!(spa.len(), PREFIX.len() + 64);
        assert_ne!(spa, key_for(RefreshKind::DeviceCode, "rt"));
        assert_eq!(spa, key_for(RefreshKind::Spa, "rt"));
    }

    #[test]
    fn pruning_drops_expired_records_then_the_oldest_beyond_the_cap() {
        let now = 10_000;
        let mut records: Vec<(String, u64)> = (0..10).map(|i| (format!("k{i}"), now - i)).collect();
        records.push(("old".into(), now - TTL_SECS));
        let pruned = to_prune(&records, now);
        // The expired one, and the two oldest of the ten live ones.
        assert_eq!(
            pruned,
            vec!["old".to_owned(), "k8".to_owned(), "k9".to_owned()]
        );
        // Few and recent: nothing goes.
        assert!(to_prune(&records[..3], now).is_empty());
    }
}
