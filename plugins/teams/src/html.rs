//! Teams message content: HTML to plain text, plain text to HTML, reply
//! quotes, and the `URIObject` markup of images and files. A small
//! scanner, not a parser: the host sanitizes the HTML it forwards, this
//! only has to read what Teams writes and never fail on what it does not.

/// The plain text of Teams HTML: tags dropped, line breaks kept, entities
/// decoded, emoji images replaced by their `alt`.
pub(crate) fn to_plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..lt]));
        let after = &rest[lt + 1..];
        let starts_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        match after.find('>') {
            Some(gt) if starts_tag => {
                plain_of_tag(&after[..gt], &mut out);
                rest = &after[gt + 1..];
            }
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(&decode_entities(rest));
    tidy_lines(&out)
}

/// What a tag contributes to the plain text.
fn plain_of_tag(tag: &str, out: &mut String) {
    let closing = tag.starts_with('/');
    let name = tag_name(tag);
    let newline = |out: &mut String| {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    };
    match name.as_str() {
        "br" => out.push('\n'),
        "p" | "div" | "li" | "tr" | "blockquote" | "pre" | "h1" | "h2" | "h3" | "h4" | "h5"
        | "h6" | "ul" | "ol" | "table"
            if closing =>
        {
            newline(out)
        }
        "img" => {
            if let Some(alt) = attr(tag, "alt") {
                out.push_str(&alt);
            }
        }
        _ => {}
    }
}

/// Trims the text and its lines' ends, and keeps at most one blank line.
fn tidy_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// The lower-case name of a tag (`p` of `/p`, `img` of `img src=…`).
fn tag_name(tag: &str) -> String {
    tag.trim_start_matches('/')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The value of attribute `name` in a tag's text, entities decoded.
pub(crate) fn attr(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let needle = format!("{}=", name.to_ascii_lowercase());
    let mut from = 0;
    while let Some(found) = lower[from..].find(&needle) {
        let at = from + found;
        from = at + needle.len();
        // The name must start a word: `id=` is not the end of `itemid=`.
        let boundary = lower[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_ascii_whitespace() || c == '<');
        if !boundary {
            continue;
        }
        let value = &tag[from..];
        let raw = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let inner = &value[1..];
                &inner[..inner.find(quote).unwrap_or(inner.len())]
            }
            _ => {
                let end = value
                    .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
                    .unwrap_or(value.len());
                &value[..end]
            }
        };
        return Some(decode_entities(raw));
    }
    None
}

/// Decodes the named entities Teams uses and numeric ones; anything else
/// is left as it is.
pub(crate) fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &after[..end];
            let ch = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => entity.strip_prefix('#').and_then(|number| {
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => number.parse::<u32>().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            ch.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Plain text as HTML: escaped, with line breaks as `<br>`.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Whether content has markup (a tag), as opposed to plain text that may
/// still carry entities.
pub(crate) fn has_markup(content: &str) -> bool {
    content.match_indices('<').any(|(at, _)| {
        content[at + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
    })
}

/// The byte range of the first element `name` (from its opening tag to
/// the end of its closing tag, or of the text) whose opening tag
/// satisfies `pick`, searched without case.
fn element_range(html: &str, name: &str, pick: impl Fn(&str) -> bool) -> Option<(usize, usize)> {
    let lower = html.to_ascii_lowercase();
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut from = 0;
    while let Some(found) = lower[from..].find(&open) {
        let start = from + found;
        let tag_end = start + lower[start..].find('>')?;
        from = tag_end;
        let next = lower[start + open.len()..].chars().next();
        if !next.is_some_and(|c| c.is_ascii_whitespace() || c == '>' || c == '/') {
            continue;
        }
        if !pick(&html[start + 1..tag_end]) {
            continue;
        }
        let end = lower[tag_end..]
            .find(&close)
            .map_or(html.len(), |at| tag_end + at + close.len());
        return Some((start, end));
    }
    None
}

/// A reply's quote (`<blockquote itemtype="http://schema.skype.com/Reply"
/// itemid="<message id>">`): the quoted message's id, and the content
/// without the quote.
pub(crate) fn take_reply(html: &str) -> (Option<String>, String) {
    let is_reply = |tag: &str| {
        attr(tag, "itemtype")
            .is_some_and(|t| t.to_ascii_lowercase().contains("schema.skype.com/reply"))
    };
    match element_range(html, "blockquote", is_reply) {
        Some((start, end)) => {
            let tag_end = html[start..].find('>').map_or(end, |at| start + at);
            let target =
                attr(&html[start + 1..tag_end], "itemid").filter(|id| !id.trim().is_empty());
            let mut rest = String::with_capacity(html.len());
            rest.push_str(&html[..start]);
            rest.push_str(&html[end..]);
            (target, rest)
        }
        None => (None, html.to_owned()),
    }
}

/// Removes a Matrix reply fallback (`<mx-reply>…</mx-reply>`) from HTML
/// sent from Matrix.
pub(crate) fn strip_mx_reply(html: &str) -> String {
    match element_range(html, "mx-reply", |_| true) {
        Some((start, end)) => format!("{}{}", &html[..start], &html[end..]),
        None => html.to_owned(),
    }
}

/// The quote that makes a Teams message a reply to message `target`.
pub(crate) fn reply_quote(target: &str) -> String {
    format!(
        "<blockquote itemscope=\"\" itemtype=\"http://schema.skype.com/Reply\" itemid=\"{}\"></blockquote>",
        escape(target)
    )
}

/// The `src` of the first image, e.g. of a GIF (`<readonly
/// itemtype="http://schema.skype.com/Giphy"><img src="…"></readonly>`).
pub(crate) fn first_img_src(html: &str) -> Option<String> {
    let (start, _) = element_range(html, "img", |tag| attr(tag, "src").is_some())?;
    let tag_end = start + html[start..].find('>')?;
    attr(&html[start + 1..tag_end], "src")
}

/// An image or file shared through Skype's media service: the
/// `<URIObject>` of `RichText/UriObject` and `RichText/Media_*` messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UriObject {
    /// The object's URL (`uri`).
    pub(crate) uri: String,
    /// Its type, e.g. `Picture.1`, `Video.1/Message.1`, `File.1`.
    pub(crate) kind: String,
    /// The file's name, if given.
    pub(crate) name: Option<String>,
    /// Its size in bytes, if given.
    pub(crate) size: Option<u64>,
}

/// The `<URIObject>` in content, if there is one with a URL.
pub(crate) fn parse_uri_object(content: &str) -> Option<UriObject> {
    let (start, end) = element_range(content, "uriobject", |_| true)?;
    let tag_end = start + content[start..].find('>')?;
    let tag = &content[start + 1..tag_end];
    let element = &content[start..end];
    let inner_value = |name: &str| {
        element_range(element, name, |tag| attr(tag, "v").is_some()).and_then(|(s, _)| {
            let e = s + element[s..].find('>')?;
            attr(&element[s + 1..e], "v")
        })
    };
    let anchor = || {
        element_range(element, "a", |tag| attr(tag, "href").is_some()).and_then(|(s, _)| {
            let e = s + element[s..].find('>')?;
            attr(&element[s + 1..e], "href")
        })
    };
    let meta_name = || {
        element_range(element, "meta", |tag| attr(tag, "originalname").is_some()).and_then(
            |(s, _)| {
                let e = s + element[s..].find('>')?;
                attr(&element[s + 1..e], "originalname")
            },
        )
    };
    let uri = attr(tag, "uri")
        .filter(|u| !u.trim().is_empty())
        .or_else(anchor)?;
    Some(UriObject {
        uri: uri.trim().to_owned(),
        kind: attr(tag, "type").unwrap_or_default(),
        name: inner_value("originalname")
            .or_else(meta_name)
            .or_else(|| inner_value("title"))
            .filter(|n| !n.trim().is_empty()),
        size: inner_value("filesize").and_then(|s| s.trim().parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_plain_text_with_line_breaks() {
        assert_eq!(to_plain("<p>hi</p>"), "hi");
        assert_eq!(to_plain("<p>one</p><p>two<br>three</p>"), "one\ntwo\nthree");
        // Entities are decoded, formatting dropped.
        assert_eq!(
            to_plain("<b>fish &amp; chips</b> &lt;3 &#128512; &#x1F600;"),
            "fish & chips <3 😀 😀"
        );
        // Emoji markup keeps its text; emoji images their alt.
        assert_eq!(
            to_plain(
                "<ss type=\"smile\">:)</ss> <img itemtype=\"http://schema.skype.com/Emoji\" alt=\"👍\">"
            ),
            ":) 👍"
        );
        // A stray `<` that starts no tag is text.
        assert_eq!(to_plain("a < b"), "a < b");
        // An unterminated tag is not a crash.
        assert_eq!(to_plain("a <b"), "a <b");
    }

    #[test]
    fn unknown_entities_are_left_alone() {
        assert_eq!(
            decode_entities("AT&T &bogus; &#xZZ;"),
            "AT&T &bogus; &#xZZ;"
        );
        assert_eq!(decode_entities("&quot;x&apos;"), "\"x'");
    }

    #[test]
    fn plain_text_is_escaped_for_html() {
        assert_eq!(
            escape("<b>\"fish\" & chips</b>\nnext"),
            "&lt;b&gt;&quot;fish&quot; &amp; chips&lt;/b&gt;<br>next"
        );
    }

    #[test]
    fn attributes_are_read_with_either_quote_and_no_partial_names() {
        let tag =
            "blockquote itemscope=\"\" itemtype='http://schema.skype.com/Reply' itemid=\"42\"";
        assert_eq!(attr(tag, "itemid").as_deref(), Some("42"));
        // `id` is not matched inside `itemid`.
        assert_eq!(attr(tag, "id"), None);
        assert_eq!(
            attr(tag, "itemtype").as_deref(),
            Some("http://schema.skype.com/Reply")
        );
        assert_eq!(attr("img src=x.png alt=y", "src").as_deref(), Some("x.png"));
    }

    #[test]
    fn a_reply_quote_gives_the_quoted_message_and_is_removed() {
        let html = "<blockquote itemscope=\"\" itemtype=\"http://schema.skype.com/Reply\" itemid=\"1715\"><strong>Bob</strong><p>old</p></blockquote><p>new</p>";
        let (target, rest) = take_reply(html);
        // The quoted message's id.
        assert_eq!(target.as_deref(), Some("1715"));
        // The quote is gone from the content.
        assert_eq!(rest, "<p>new</p>");
        // An ordinary quote is not a reply.
        let (target, rest) = take_reply("<blockquote>quoted</blockquote>x");
        assert_eq!(target, None);
        assert_eq!(rest, "<blockquote>quoted</blockquote>x");
    }

    #[test]
    fn a_matrix_reply_fallback_is_stripped() {
        assert_eq!(
            strip_mx_reply("<mx-reply><blockquote>q</blockquote></mx-reply>answer"),
            "answer"
        );
        assert_eq!(strip_mx_reply("<b>x</b>"), "<b>x</b>");
    }

    #[test]
    fn uri_objects_give_the_url_name_and_size() {
        let content = "<URIObject type=\"Picture.1\" uri=\"https://api.asm.skype.com/v1/objects/0-weu-d1-abc\" url_thumbnail=\"https://api.asm.skype.com/v1/objects/0-weu-d1-abc/views/imgt1\">To view this shared photo, go to: <a href=\"https://login.skype.com/login/sso?go=xmmfallback?pic=0-weu-d1-abc\">https://login.skype.com/…</a><OriginalName v=\"cat.png\"></OriginalName><FileSize v=\"2048\"></FileSize><meta type=\"photo\" originalName=\"cat.png\"></meta></URIObject>";
        let object = parse_uri_object(content).unwrap();
        assert_eq!(
            object.uri,
            "https://api.asm.skype.com/v1/objects/0-weu-d1-abc"
        );
        assert_eq!(object.kind, "Picture.1");
        assert_eq!(object.name.as_deref(), Some("cat.png"));
        assert_eq!(object.size, Some(2048));
        // Self-closing children and a name from `meta` only.
        let content = "<uriobject type=\"File.1\" uri=\"http://127.0.0.1:1/files/7\"><meta type=\"file\" originalName=\"a.pdf\"/></uriobject>";
        let object = parse_uri_object(content).unwrap();
        assert_eq!(object.name.as_deref(), Some("a.pdf"));
        assert_eq!(object.size, None);
        // No URIObject, or one without a URL.
        assert_eq!(parse_uri_object("<p>hi</p>"), None);
        assert_eq!(
            parse_uri_object("<URIObject type=\"Picture.1\"></URIObject>"),
            None
        );
    }

    #[test]
    fn a_gif_gives_its_image_url() {
        let content = "<readonly title=\"Giphy\" itemtype=\"http://schema.skype.com/Giphy\"><img alt=\"Giphy\" src=\"https://media.giphy.com/x.gif\" itemtype=\"http://schema.skype.com/Giphy\"></readonly>";
        assert_eq!(
            first_img_src(content).as_deref(),
            Some("https://media.giphy.com/x.gif")
        );
    }

    #[test]
    fn markup_is_told_from_plain_text() {
        assert!(has_markup("<p>x</p>"));
        assert!(!has_markup("1 < 2 &amp; 3"));
    }
}
