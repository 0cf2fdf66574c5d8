//! What the provider keeps in its KV namespace:
//!
//! - `user/<cert hash>` → [`User`]
//! - `next-id` → the id the next new user gets
//! - `pending/<cert hash>` → the id a creation in progress reserved
//! - `channel/<id>` → the channel's name (added by the admin route; the
//!   `channels` setting lists the others)
//! - `room/<channel id>` → the channel's room id
//! - `new-users/<client address>` → [`Window`], the rate of new users

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_sdk::{Error, Result, config, kv, time};

/// A Brmble user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct User {
    /// The numeric id: the Matrix localpart.
    pub(crate) id: u64,
    /// The SHA-1 of the user's certificate, lowercase hex.
    pub(crate) cert_hash: String,
    /// The name the user goes by, if known.
    pub(crate) display_name: Option<String>,
    /// The user's Matrix access token, if one was issued.
    pub(crate) access_token: Option<String>,
}

/// New users created from one address in the current hour.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Window {
    started_ms: u64,
    created: u32,
}

const HOUR_MS: u64 = 3_600_000;

/// Whether `hash` is a SHA-1 fingerprint: 40 lowercase hex characters.
pub(crate) fn is_cert_hash(hash: &str) -> bool {
    hash.len() == 40 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn storage(error: kv::KvError) -> Error {
    Error::transient(format!("storage: {error}"))
}

/// The user of certificate `hash`.
pub(crate) fn user(hash: &str) -> Result<Option<User>> {
    kv::get(&format!("user/{hash}")).map_err(storage)
}

/// Stores `user`.
pub(crate) fn put_user(user: &User) -> Result<()> {
    kv::set(&format!("user/{}", user.cert_hash), user).map_err(storage)
}

/// Takes the next id for a new user of `hash`, and remembers that this
/// hash's creation is in progress with it.
pub(crate) fn reserve_id(hash: &str) -> Result<u64> {
    let id = kv::get::<u64>("next-id").map_err(storage)?.unwrap_or(1);
    kv::set("next-id", &(id + 1)).map_err(storage)?;
    kv::set(&format!("pending/{hash}"), &id).map_err(storage)?;
    Ok(id)
}

/// The id an unfinished creation for `hash` reserved, if any.
pub(crate) fn pending(hash: &str) -> Result<Option<u64>> {
    kv::get(&format!("pending/{hash}")).map_err(storage)
}

/// Ends `hash`'s creation.
pub(crate) fn clear_pending(hash: &str) -> Result<()> {
    kv::delete(&format!("pending/{hash}")).map_err(storage)?;
    Ok(())
}

/// Every channel: the `channels` setting, then those the admin route
/// added (which win on the same id).
pub(crate) fn channels() -> Result<BTreeMap<String, String>> {
    let configured: String = config::get("channels")?.unwrap_or_else(|| "{}".into());
    let mut channels: BTreeMap<String, String> =
        serde_json::from_str(&configured).map_err(|e| {
            Error::internal(format!(
                "the `channels` setting is not a JSON object of id to name: {e}"
            ))
        })?;
    for key in kv::list_keys("channel/").map_err(storage)? {
        if let Some(name) = kv::get::<String>(&key).map_err(storage)? {
            channels.insert(key["channel/".len()..].to_owned(), name);
        }
    }
    Ok(channels)
}

/// Adds or renames channel `id`.
pub(crate) fn put_channel(id: &str, name: &str) -> Result<()> {
    kv::set(&format!("channel/{id}"), name).map_err(storage)
}

/// The room of channel `id`, once created.
pub(crate) fn room(id: &str) -> Result<Option<String>> {
    kv::get(&format!("room/{id}")).map_err(storage)
}

/// Records the room of channel `id`.
pub(crate) fn put_room(id: &str, room: &str) -> Result<()> {
    kv::set(&format!("room/{id}"), room).map_err(storage)
}

/// The creation window of `address`, reset once an hour has passed.
fn window(address: &str) -> Result<(String, Window)> {
    let key = format!("new-users/{address}");
    let now = time::now_ms();
    let mut window: Window = kv::get(&key).map_err(storage)?.unwrap_or_default();
    if now.saturating_sub(window.started_ms) >= HOUR_MS {
        window = Window {
            started_ms: now,
            created: 0,
        };
    }
    Ok((key, window))
}

/// Whether `address` may create another user: fewer than `per_hour` in
/// its current hour.
pub(crate) fn may_create_user(address: &str, per_hour: u32) -> Result<bool> {
    Ok(window(address)?.1.created < per_hour)
}

/// Counts a user created from `address` (only once it exists, so failed
/// attempts cost nothing).
pub(crate) fn count_new_user(address: &str) -> Result<()> {
    let (key, mut window) = window(address)?;
    window.created += 1;
    kv::set(&key, &window).map_err(storage)
}

#[cfg(test)]
mod tests {
    use super::is_cert_hash;

    #[test]
    fn a_cert_hash_is_forty_lowercase_hex_characters() {
        assert!(is_cert_hash("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_cert_hash("0123456789ABCDEF0123456789abcdef01234567"));
        assert!(!is_cert_hash("0123456789abcdef0123456789abcdef0123456"));
        assert!(!is_cert_hash("0123456789abcdef0123456789abcdef012345678"));
        assert!(!is_cert_hash("0123456789abcdef0123456789abcdef0123456g"));
        assert!(!is_cert_hash(""));
    }
}
