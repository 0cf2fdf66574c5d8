//! What weft's fuzz targets share. Each target is a `proptest` test in the
//! crate that owns the parser (so it reaches private functions); this
//! crate gives them their inputs and their length:
//!
//! - [`config`]: `WEFT_FUZZ_CASES` cases (1,000 by default, what CI runs;
//!   `WEFT_FUZZ_CASES=200000 cargo test fuzz` runs longer by hand). A
//!   failing input is shrunk and saved under the crate's
//!   `proptest-regressions/`, which is committed: it runs first ever after.
//! - [`json`]: JSON whose keys and strings come mostly from a target's own
//!   vocabulary, so the parser's branches are reached, not only its
//!   "not an object" error.
//! - [`spliced`]: text spliced from a target's markup pieces and random
//!   characters (HTML, TOML, comments).

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// Cases per target: `WEFT_FUZZ_CASES`, else 1,000.
pub fn cases() -> u32 {
    std::env::var("WEFT_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

/// The proptest config of a fuzz target.
pub fn config() -> Config {
    Config {
        cases: cases(),
        // Shrinking a failure may take long; a failure is what matters.
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// One of `words`, or any short text.
fn word(words: &'static [&'static str]) -> BoxedStrategy<String> {
    if words.is_empty() {
        return "\\PC{0,12}".boxed();
    }
    prop_oneof![
        3 => proptest::sample::select(words).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
    .boxed()
}

/// JSON up to four levels deep whose object keys are mostly `keys` and
/// whose strings are mostly `strings`.
pub fn json(
    keys: &'static [&'static str],
    strings: &'static [&'static str],
) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        word(strings).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((word(keys), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Text made of up to 40 pieces, each one of `pieces` or random
/// characters.
pub fn spliced(pieces: &'static [&'static str]) -> BoxedStrategy<String> {
    proptest::collection::vec(word(pieces), 0..40)
        .prop_map(|parts| parts.concat())
        .boxed()
}
