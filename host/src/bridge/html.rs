//! Remote HTML, cut down to what Matrix clients may render.
//!
//! A connector passes on HTML from a remote network it does not control;
//! it reaches Matrix users' clients only through [`sanitize`], which keeps
//! the tags and attributes the Matrix spec lists for `m.room.message` and
//! drops everything else (scripts, event handlers, styles, `javascript:`
//! links, remote images). The work is ammonia's.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

/// The tags the Matrix spec allows in `formatted_body`.
const TAGS: &[&str] = &[
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "strike",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
    "details",
    "summary",
];

static CLEANER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::empty();
    builder.tags(TAGS.iter().copied().collect::<HashSet<_>>());
    let colours = ["data-mx-bg-color", "data-mx-color", "color"];
    let mut attributes: HashMap<&str, HashSet<&str>> = HashMap::new();
    attributes.insert("font", colours.into_iter().collect());
    attributes.insert(
        "span",
        ["data-mx-bg-color", "data-mx-color", "data-mx-spoiler"]
            .into_iter()
            .collect(),
    );
    attributes.insert("a", ["name", "target", "href"].into_iter().collect());
    attributes.insert(
        "img",
        ["width", "height", "alt", "title", "src"]
            .into_iter()
            .collect(),
    );
    attributes.insert("ol", ["start"].into_iter().collect());
    attributes.insert("code", ["class"].into_iter().collect());
    builder.tag_attributes(attributes);
    builder.url_schemes(
        ["http", "https", "ftp", "mailto", "magnet", "mxc"]
            .into_iter()
            .collect(),
    );
    // Images must come from the homeserver (mxc:), never from a remote
    // server that would learn who reads the message.
    builder.attribute_filter(|element, attribute, value| match (element, attribute) {
        ("img", "src") if !value.starts_with("mxc://") => None,
        ("a", "href") if value.starts_with("mxc://") => None,
        ("code", "class") if !value.starts_with("language-") => None,
        _ => Some(value.into()),
    });
    builder.link_rel(Some("noopener"));
    builder
});

/// `html` with only what Matrix allows.
pub fn sanitize(html: &str) -> String {
    CLEANER.clean(html).to_string()
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn scripts_handlers_and_javascript_links_are_removed() {
        let hostile = r#"<p onclick="steal()">hi<script>alert(1)</script> <a href="javascript:alert(2)">x</a> <img src="https://tracker.example/p.gif" onerror="x()"><style>p{}</style></p>"#;
        let clean = sanitize(hostile);
        // The text stays; everything that runs, tracks or styles goes.
        assert!(clean.contains("hi"), "{clean}");
        for bad in [
            "script",
            "alert",
            "onclick",
            "onerror",
            "javascript",
            "tracker",
            "style",
        ] {
            assert!(!clean.contains(bad), "{bad} left in {clean}");
        }
    }

    #[test]
    fn matrix_formatting_survives() {
        let html = r#"<b>bold</b> <em>em</em> <a href="https://example.com">link</a> <code class="language-rust">x</code> <span data-mx-spoiler="">s</span> <img src="mxc://hs/abc" alt="pic">"#;
        let clean = sanitize(html);
        assert!(clean.contains("<b>bold</b>"), "{clean}");
        assert!(clean.contains(r#"href="https://example.com""#), "{clean}");
        assert!(clean.contains(r#"class="language-rust""#), "{clean}");
        assert!(clean.contains("data-mx-spoiler"), "{clean}");
        assert!(clean.contains(r#"src="mxc://hs/abc""#), "{clean}");
        // Unknown tags go, their text stays.
        assert_eq!(sanitize("<marquee>wheee</marquee>"), "wheee");
    }
}
