//! Lenient reading of JSON fields that Microsoft and MSAL write sometimes
//! as numbers and sometimes as strings (`"expiresOn":"1700003600"`,
//! `"expires_in":3599`, `"interval":"5"`).

use serde_json::Value;

/// A non-negative whole number from a number or a numeric string;
/// fractions are cut off. `None` for anything else.
pub(crate) fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

/// Field `name` of `object` as a number, leniently.
pub(crate) fn u64_field(object: &Value, name: &str) -> Option<u64> {
    object.get(name).and_then(lenient_u64)
}

/// Field `name` of `object` as a non-empty string.
pub(crate) fn str_field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Unix seconds from a timestamp that may be in milliseconds (values past
/// the year 5138 in seconds are taken as milliseconds).
pub(crate) fn unix_seconds(value: &Value) -> Option<u64> {
    lenient_u64(value).map(|t| if t > 100_000_000_000 { t / 1000 } else { t })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_come_as_numbers_strings_or_fractions() {
        assert_eq!(lenient_u64(&json!(5)), Some(5));
        assert_eq!(lenient_u64(&json!("900")), Some(900));
        assert_eq!(lenient_u64(&json!(" 12 ")), Some(12));
        assert_eq!(lenient_u64(&json!(3599.9)), Some(3599));
        // Negative, non-numeric and other types are not numbers.
        assert_eq!(lenient_u64(&json!(-1)), None);
        assert_eq!(lenient_u64(&json!("soon")), None);
        assert_eq!(lenient_u64(&json!(null)), None);
    }

    #[test]
    fn millisecond_timestamps_are_read_as_seconds() {
        assert_eq!(unix_seconds(&json!("1700000000")), Some(1_700_000_000));
        assert_eq!(
            unix_seconds(&json!(1_700_000_000_000_u64)),
            Some(1_700_000_000)
        );
    }
}
