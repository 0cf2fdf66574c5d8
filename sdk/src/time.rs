//! Clocks and randomness, through WASI, for plugins built for any wasm
//! target (on `wasm32-unknown-unknown`, `std::time::SystemTime::now` and
//! OS randomness are not available; these are).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wit::imports::wasi::clocks::{monotonic_clock, wall_clock};
use crate::wit::imports::wasi::random::random;

/// The wall-clock time.
pub fn now() -> SystemTime {
    let now = wall_clock::now();
    UNIX_EPOCH + Duration::new(now.seconds, now.nanoseconds)
}

/// The wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    let now = wall_clock::now();
    now.seconds * 1000 + u64::from(now.nanoseconds / 1_000_000)
}

/// A monotonic instant, in nanoseconds from an unspecified start, for
/// measuring durations.
pub fn monotonic_ns() -> u64 {
    monotonic_clock::now()
}

/// `len` cryptographically secure random bytes.
pub fn random_bytes(len: u64) -> Vec<u8> {
    random::get_random_bytes(len)
}

/// A cryptographically secure random `u64`.
pub fn random_u64() -> u64 {
    random::get_random_u64()
}
