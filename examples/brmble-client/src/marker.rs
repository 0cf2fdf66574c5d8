//! The Brmble marker in a Mumble welcome text: an HTML comment
//! `<!--brmble:{"apiUrl":"https://…"}-->` that a Brmble server adds to its
//! welcome message, invisible to ordinary Mumble clients, telling Brmble
//! clients where the server's API is (flow A).

const OPEN: &str = "<!--";
const CLOSE: &str = "-->";
const TAG: &str = "brmble:";

/// What a welcome text's marker announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The base URL of the Brmble API, without a trailing slash, so that
    /// `format!("{api_url}/auth/token")` is the token endpoint.
    pub api_url: String,
}

/// Finds the first well-formed Brmble marker in `welcome_text`, or `None`
/// if there is none: a legacy Mumble server.
///
/// It is lenient where servers and admins vary and strict about the URL:
/// the comment may sit anywhere among other HTML and comments, with
/// whitespace around the tag and the JSON, and with its quotes written as
/// HTML entities (`&quot;`) by a server or panel that escaped them; a marker
/// whose JSON does not parse, or whose `apiUrl` is not an absolute http(s)
/// URL, is skipped as if absent.
pub fn parse_welcome(welcome_text: &str) -> Option<Marker> {
    let mut rest = welcome_text;
    while let Some(start) = rest.find(OPEN) {
        let after_open = &rest[start + OPEN.len()..];
        // A comment runs to the first `-->`; one that never closes is not a
        // comment (and neither is anything after it).
        let end = after_open.find(CLOSE)?;
        let body = &after_open[..end];
        rest = &after_open[end + CLOSE.len()..];
        if let Some(json) = body.trim_start().strip_prefix(TAG)
            && let Some(marker) = parse_payload(json.trim())
        {
            return Some(marker);
        }
    }
    None
}

fn parse_payload(json: &str) -> Option<Marker> {
    // An object with a string `apiUrl`; read as a Value because serde's
    // derive would also take a struct from a JSON array.
    let api_url_of = |json: &str| {
        let value = serde_json::from_str::<serde_json::Value>(json).ok()?;
        value.get("apiUrl")?.as_str().map(str::to_owned)
    };
    // Entities only where the JSON needs them: unescaping first could
    // break a payload that is valid as it stands.
    let api_url = api_url_of(json).or_else(|| api_url_of(&unescape_html(json)))?;
    let api_url = api_url.trim().trim_end_matches('/');
    let parsed = url::Url::parse(api_url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    Some(Marker {
        api_url: api_url.to_owned(),
    })
}

/// Decodes the entities an HTML escaper writes (`&quot;`, `&#34;`,
/// `&#x22;`, `&apos;`, `&#39;`, `&lt;`, `&gt;`, `&amp;`), leaving anything
/// else as it is. `&amp;` goes last in effect, as each entity is decoded
/// once from left to right: `&amp;quot;` stays `&quot;`.
fn unescape_html(text: &str) -> String {
    const ENTITIES: [(&str, char); 9] = [
        ("&quot;", '"'),
        ("&#34;", '"'),
        ("&#x22;", '"'),
        ("&apos;", '\''),
        ("&#39;", '\''),
        ("&#x27;", '\''),
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&amp;", '&'),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        for (entity, c) in ENTITIES {
            if rest.len() >= entity.len()
                && rest.is_char_boundary(entity.len())
                && rest[..entity.len()].eq_ignore_ascii_case(entity)
            {
                out.push(c);
                rest = &rest[entity.len()..];
                continue 'outer;
            }
        }
        out.push('&');
        rest = &rest[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{Marker, parse_welcome, unescape_html};

    fn api(url: &str) -> Option<Marker> {
        Some(Marker {
            api_url: url.to_owned(),
        })
    }

    #[test]
    fn the_marker_of_the_design_document_is_found() {
        let text = "Welcome!\n<!--brmble:{\"apiUrl\":\"https://noscope.it:1912\"}-->";
        // The example from the source design reads back as its URL.
        assert_eq!(parse_welcome(text), api("https://noscope.it:1912"));
    }

    #[test]
    fn the_marker_is_found_anywhere_among_html_and_other_comments() {
        let text = concat!(
            "<p>Welcome to <b>Noscope</b>!</p><!-- a note for admins -->",
            "<br/>Rules: <i>be kind</i><!--brmble:{\"apiUrl\":\"http://127.0.0.1:29300/brmble\"}-->",
            "<p>Have fun</p><!-- another -->"
        );
        // Comments before it are not mistaken for it, and HTML after it
        // does not matter.
        assert_eq!(parse_welcome(text), api("http://127.0.0.1:29300/brmble"));
    }

    #[test]
    fn whitespace_around_the_tag_and_inside_the_json_is_tolerated() {
        let text = "<!--  brmble: {\n  \"apiUrl\" : \"https://example.org/api\"\n}  -->";
        // Spaces after `<!--`, around the JSON and inside it are accepted.
        assert_eq!(parse_welcome(text), api("https://example.org/api"));
    }

    #[test]
    fn a_trailing_slash_on_the_api_url_is_dropped() {
        let text = r#"<!--brmble:{"apiUrl":"https://example.org/brmble/"}-->"#;
        // `{apiUrl}/auth/token` must not get a double slash.
        assert_eq!(parse_welcome(text), api("https://example.org/brmble"));
    }

    #[test]
    fn other_fields_in_the_json_are_ignored() {
        let text =
            r#"<!--brmble:{"version":2,"apiUrl":"https://example.org","extra":{"a":[1]}}-->"#;
        // A newer server's extra fields do not hide the URL.
        assert_eq!(parse_welcome(text), api("https://example.org"));
    }

    #[test]
    fn html_escaped_quotes_are_decoded() {
        // The way a panel that HTML-escapes everything would write it.
        let text =
            "Hi<!--brmble:{&quot;apiUrl&quot;:&quot;https://example.org/a?x=1&amp;y=2&quot;}-->";
        assert_eq!(parse_welcome(text), api("https://example.org/a?x=1&y=2"));
        // Numeric entities work too.
        let text = "<!--brmble:{&#34;apiUrl&#34;:&#x22;https://example.org&#x22;}-->";
        assert_eq!(parse_welcome(text), api("https://example.org"));
    }

    #[test]
    fn a_valid_payload_is_not_unescaped() {
        // `&amp;` inside a valid JSON string is the URL's own text.
        let text = r#"<!--brmble:{"apiUrl":"https://example.org/a?q=&amp;"}-->"#;
        assert_eq!(parse_welcome(text), api("https://example.org/a?q=&amp;"));
    }

    #[test]
    fn a_text_without_a_marker_is_a_legacy_server() {
        // Plain text.
        assert_eq!(parse_welcome("Welcome to this Mumble server!"), None);
        // Empty text (murmur sends none when it has no welcome text).
        assert_eq!(parse_welcome(""), None);
        // Other comments only.
        assert_eq!(parse_welcome("<!-- hello --><b>hi</b><!--x-->"), None);
        // A comment with another tag.
        assert_eq!(
            parse_welcome(r#"<!--other:{"apiUrl":"https://example.org"}-->"#),
            None
        );
        // The tag as visible text, not in a comment.
        assert_eq!(
            parse_welcome(r#"brmble:{"apiUrl":"https://example.org"}"#),
            None
        );
    }

    #[test]
    fn malformed_markers_are_ignored() {
        let cases = [
            // Not JSON.
            "<!--brmble:not json-->",
            // Truncated JSON.
            r#"<!--brmble:{"apiUrl":"https://example.org"-->"#,
            // No apiUrl.
            r#"<!--brmble:{"url":"https://example.org"}-->"#,
            // apiUrl not a string.
            r#"<!--brmble:{"apiUrl":42}-->"#,
            // Not a URL.
            r#"<!--brmble:{"apiUrl":"noscope.it:1912"}-->"#,
            // Not http(s): a client must not post a certificate hash there.
            r#"<!--brmble:{"apiUrl":"javascript:alert(1)"}-->"#,
            r#"<!--brmble:{"apiUrl":"file:///etc/passwd"}-->"#,
            // Empty.
            r#"<!--brmble:{"apiUrl":""}-->"#,
            // Never closed.
            r#"<!--brmble:{"apiUrl":"https://example.org"}"#,
            // The JSON as an array.
            r#"<!--brmble:["https://example.org"]-->"#,
        ];
        for text in cases {
            // Each reads as no marker, not as an error or a panic.
            assert_eq!(parse_welcome(text), None, "{text}");
        }
    }

    #[test]
    fn the_first_well_formed_marker_wins() {
        let text = concat!(
            "<!--brmble:{broken}-->",
            r#"<!--brmble:{"apiUrl":"https://first.example.org"}-->"#,
            r#"<!--brmble:{"apiUrl":"https://second.example.org"}-->"#,
        );
        // A broken marker does not hide a good one after it, and the first
        // good one is taken.
        assert_eq!(parse_welcome(text), api("https://first.example.org"));
    }

    #[test]
    fn an_unclosed_comment_hides_what_follows_it() {
        let text = concat!(
            "<!-- never closed ",
            r#"brmble:{"apiUrl":"https://example.org"}"#
        );
        // As in HTML, it is all one unterminated comment.
        assert_eq!(parse_welcome(text), None);
        // Whereas a marker before it is still found.
        let text = concat!(
            r#"<!--brmble:{"apiUrl":"https://example.org"}-->"#,
            "<!-- x"
        );
        assert_eq!(parse_welcome(text), api("https://example.org"));
    }

    #[test]
    fn non_ascii_text_around_the_marker_is_fine() {
        let text = "Välkommen! 🎧 <!--brmble:{\"apiUrl\":\"https://exämple.org\"}--> ✓";
        // Multi-byte characters do not upset the slicing, and an IDN host
        // is a URL like any other.
        assert_eq!(parse_welcome(text), api("https://exämple.org"));
    }

    #[test]
    fn unescaping_decodes_each_entity_once_and_keeps_unknown_ones() {
        // `&amp;quot;` is an escaped `&quot;`, not a quote.
        assert_eq!(unescape_html("&amp;quot;"), "&quot;");
        // Unknown entities and stray ampersands stay as they are.
        assert_eq!(unescape_html("a &nbsp; & b &"), "a &nbsp; & b &");
        // Upper-case entity names decode too.
        assert_eq!(unescape_html("&QUOT;x&Quot;"), "\"x\"");
        // Non-ASCII right after an ampersand is not split.
        assert_eq!(unescape_html("&é&lt;"), "&é<");
    }
}

/// Fuzz target (`WEFT_FUZZ_CASES`, see `weft-fuzz`): the welcome-text
/// parser, on what any Mumble server may send.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::parse_welcome;

    const PIECES: &[&str] = &[
        "<!--",
        "-->",
        "brmble:",
        "{\"apiUrl\":\"",
        "https://noscope.it:1912",
        "http://127.0.0.1/b",
        "javascript:alert(1)",
        "\"}",
        "&quot;",
        "&amp;",
        "&#34;",
        "&#x22;",
        "&",
        "{",
        "}",
        "\"",
        " ",
        "\n",
        "<p>",
        "</p>",
        "<!-- note -->",
        "é",
        "\u{0}",
    ];

    proptest! {
        #![proptest_config(weft_fuzz::config())]

        #[test]
        fn any_welcome_text_gives_an_http_url_or_nothing_never_a_panic(
            text in weft_fuzz::spliced(PIECES)
        ) {
            if let Some(marker) = parse_welcome(&text) {
                let url = url::Url::parse(&marker.api_url).unwrap();
                prop_assert!(matches!(url.scheme(), "http" | "https"), "{}", marker.api_url);
            }
        }
    }
}
