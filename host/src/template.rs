//! The host's HTML pages (login pages, the status page) are templates
//! with `{{name}}` placeholders, filled here.

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
