//! The host's HTML pages (login pages, the status page): templates with
//! `{{name}}` placeholders, filled here, and the headers every page
//! carries.

use axum::http::{HeaderMap, HeaderValue, header};

/// Sets the headers every page carries: its content security policy
/// `csp`, nothing cached, no referrer, no sniffing, no framing.
pub(crate) fn harden(headers: &mut HeaderMap, csp: &str) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

/// Replaces each `{{name}}` of `template` with `value(name)`, in one pass:
/// text a value brings in is never read as a placeholder.
pub(crate) fn fill(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&value(&after[..end]));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}
