//! Teams ids (reference §5): user MRIs such as `8:live:…`, conversation
//! ids such as `19:…@thread.v2`, the sender of a message, and the URL
//! pieces built from them.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What a path segment or query value keeps unescaped (RFC 3986's
/// unreserved characters): `19:abc@thread.v2` becomes
/// `19%3Aabc%40thread.v2`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `value` for a URL path segment or query value.
pub(crate) fn encode(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

/// Whether `id` starts with an MRI type prefix: digits and a colon (`8:`,
/// `28:`, `48:`).
fn has_type_prefix(id: &str) -> bool {
    match id.split_once(':') {
        Some((prefix, _)) => !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// The normalized Teams user id of a skypeid: `8:` + skypeid. A missing
/// `8:` is added and never doubled; an id that has another type prefix
/// (`28:` bots, `48:` system) keeps it. `None` for an empty id.
pub(crate) fn normalize_mri(skypeid: &str) -> Option<String> {
    let id = skypeid.trim();
    if has_type_prefix(id) {
        let bare = id.split_once(':').map_or("", |(_, rest)| rest);
        (!bare.trim().is_empty()).then(|| id.to_owned())
    } else {
        (!id.is_empty()).then(|| format!("8:{id}"))
    }
}

/// Whether two MRIs name the same user (Teams treats them without case).
pub(crate) fn same_user(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The user id in a `from` URL (`https://…/v1/users/ME/contacts/8:live:x`):
/// its last path segment, decoded. A bare MRI is returned as it is.
pub(crate) fn user_from_link(link: &str) -> Option<String> {
    let link = link.trim();
    let without_query = link.split(['?', '#']).next().unwrap_or(link);
    let segment = without_query
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(without_query);
    let decoded = percent_decode_str(segment).decode_utf8_lossy();
    let decoded = decoded.trim();
    (!decoded.is_empty()).then(|| decoded.to_owned())
}

/// Whether a chat is a direct (one-to-one) chat: its thread properties
/// say so (`productThreadType == OneToOneChat`, `uniquerosterthread ==
/// true`), or, without them, its id is a user's MRI (legacy 1:1s) or a
/// consumer 1:1 thread (`19:uni01_…`).
pub(crate) fn is_direct(
    conversation_id: &str,
    product_thread_type: Option<&str>,
    unique_roster: Option<&str>,
) -> bool {
    if product_thread_type.is_some_and(|t| t.trim().eq_ignore_ascii_case("OneToOneChat"))
        || unique_roster.is_some_and(|u| u.trim().eq_ignore_ascii_case("true"))
    {
        return true;
    }
    if product_thread_type.is_some() || unique_roster.is_some() {
        return false;
    }
    let id = conversation_id.trim();
    (has_type_prefix(id) && !id.starts_with("19:") && !id.starts_with("48:"))
        || id.starts_with("19:uni01_")
}

/// Whether a conversation is a system feed rather than a chat (`48:`
/// ids: notifications, call logs, annotations), except `48:notes`, the
/// self-chat.
pub(crate) fn is_system_feed(conversation_id: &str) -> bool {
    conversation_id.starts_with("48:") && conversation_id != "48:notes"
}

/// The origin of an absolute `http(s)` URL, normalized:
/// `scheme://host:port` in lower case with the default port filled in.
/// `None` for anything else, a URL with credentials, or an authority
/// with a character no host name has (a `\`, which URL parsers read as a
/// path separator, would otherwise make this host and the one fetched
/// differ).
pub(crate) fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_char = |c: char| c.is_ascii_alphanumeric() || "-._:[]*".contains(c);
    if authority.is_empty() || !authority.chars().all(host_char) {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside brackets.
        Some((host, port)) if !port.contains(']') => (host.to_owned(), port.parse::<u16>().ok()?),
        _ => (authority.clone(), default_port),
    };
    if host.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{host}:{port}"))
}

/// Whether `origin` (as [`origin`] gives it) is `pattern`'s, where the
/// pattern's host may start with `*.` for any subdomain (not the bare
/// domain, nor a name that merely ends with it).
pub(crate) fn origin_matches(pattern: &str, origin: &str) -> bool {
    let split = |o: &str| {
        let (scheme, rest) = o.split_once("://")?;
        let (host, port) = rest.rsplit_once(':')?;
        Some((scheme.to_owned(), host.to_owned(), port.to_owned()))
    };
    let (Some((scheme, host, port)), Some((p_scheme, p_host, p_port))) =
        (split(origin), split(pattern))
    else {
        return false;
    };
    if scheme != p_scheme || port != p_port {
        return false;
    }
    match p_host.strip_prefix('*') {
        Some(domain) if domain.starts_with('.') => {
            host.len() > domain.len() && host.ends_with(domain)
        }
        _ => host == p_host,
    }
}

/// A paging link to follow from `base`: an absolute URL on `base`'s
/// origin, or a path on it. `None` for a link that leaves the origin (a
/// server must not send the skypetoken elsewhere).
pub(crate) fn follow_link(base: &str, link: &str) -> Option<String> {
    let link = link.trim();
    if link.is_empty() {
        return None;
    }
    let base_origin = origin(base)?;
    if link.starts_with('/') && !link.starts_with("//") {
        // Keep the base's own spelling of the origin.
        let (scheme, rest) = base.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        return Some(format!("{scheme}://{authority}{link}"));
    }
    (origin(link)? == base_origin).then(|| link.to_owned())
}

/// The last path segment of a URL (a `Location` header's message id).
pub(crate) fn last_segment(url: &str) -> Option<String> {
    user_from_link(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_adds_a_missing_8_and_never_doubles_it() {
        // A bare skypeid gets the `8:` prefix.
        assert_eq!(
            normalize_mri("live:.cid.0123456789abcdef").as_deref(),
            Some("8:live:.cid.0123456789abcdef")
        );
        assert_eq!(normalize_mri("kerashman").as_deref(), Some("8:kerashman"));
        // An id that already has it is unchanged.
        assert_eq!(
            normalize_mri("8:live:tester").as_deref(),
            Some("8:live:tester")
        );
        // Whitespace around it is dropped.
        assert_eq!(normalize_mri("  live:x \n").as_deref(), Some("8:live:x"));
        // Other type prefixes are kept, not wrapped in `8:`.
        assert_eq!(normalize_mri("28:bot").as_deref(), Some("28:bot"));
        // `orgid:` is not a type prefix.
        assert_eq!(normalize_mri("orgid:1234").as_deref(), Some("8:orgid:1234"));
        // Nothing, or a prefix alone, is no id.
        assert_eq!(normalize_mri(""), None);
        assert_eq!(normalize_mri("8:"), None);
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for raw in ["live:a", "8:live:a", "kerashman", "48:notes"] {
            let once = normalize_mri(raw).unwrap();
            // Idempotent: the login id of a relogin is the same.
            assert_eq!(normalize_mri(&once).as_deref(), Some(once.as_str()));
        }
    }

    #[test]
    fn the_sender_is_the_last_segment_of_the_from_url() {
        assert_eq!(
            user_from_link("https://msgapi.teams.live.com/v1/users/ME/contacts/8:live:bob")
                .as_deref(),
            Some("8:live:bob")
        );
        // Percent-encoded segments are decoded; queries are not part of it.
        assert_eq!(
            user_from_link("https://x/v1/users/ME/contacts/8%3Alive%3Abob?x=1").as_deref(),
            Some("8:live:bob")
        );
        // A bare MRI is its own sender.
        assert_eq!(user_from_link("8:live:bob").as_deref(), Some("8:live:bob"));
        // An empty link names nobody.
        assert_eq!(user_from_link(""), None);
    }

    #[test]
    fn direct_chats_come_from_thread_properties_or_legacy_ids() {
        // `productThreadType` says so.
        assert!(is_direct("19:abc@thread.v2", Some("OneToOneChat"), None));
        // `uniquerosterthread` says so.
        assert!(is_direct("19:abc@thread.v2", Some("Chat"), Some("true")));
        // A group chat.
        assert!(!is_direct("19:abc@thread.v2", Some("Chat"), Some("false")));
        assert!(!is_direct("19:abc@thread.skype", Some("Chat"), None));
        // No thread properties: a legacy 1:1's id is the peer's MRI.
        assert!(is_direct("8:live:bob", None, None));
        // A consumer 1:1 thread id.
        assert!(is_direct("19:uni01_abc@thread.v2", None, None));
        // An unknown 19: thread is a group; the self-chat is not a DM.
        assert!(!is_direct("19:abc@thread.v2", None, None));
        assert!(!is_direct("48:notes", None, None));
    }

    #[test]
    fn a_wildcard_origin_matches_subdomains_only_on_its_scheme_and_port() {
        let asm = origin("https://*.asm.skype.com").unwrap();
        assert_eq!(asm, "https://*.asm.skype.com:443");
        let matches = |url: &str| origin_matches(&asm, &origin(url).unwrap());
        assert!(matches(
            "https://us-api.asm.skype.com/v1/objects/0-a/views/imgpsh_fullsize"
        ));
        assert!(matches("https://api.asm.skype.com/v1/objects/0-a"));
        assert!(!matches("https://asm.skype.com/v1/objects/0-a"));
        assert!(!matches("https://evilasm.skype.com/x"));
        assert!(!matches("https://us-api.asm.skype.com.evil.test/x"));
        assert!(!matches("http://us-api.asm.skype.com/x"));
        assert!(!matches("https://us-api.asm.skype.com:8443/x"));
        let fake = origin("http://127.0.0.1:8095").unwrap();
        assert!(origin_matches(
            &fake,
            &origin("http://127.0.0.1:8095/asm/v1/objects/1").unwrap()
        ));
        assert!(!origin_matches(
            &fake,
            &origin("http://127.0.0.1:8096/").unwrap()
        ));
    }

    #[test]
    fn origins_are_normalized_and_links_stay_on_them() {
        assert_eq!(
            origin("https://MSGAPI.teams.live.com/v1/x").as_deref(),
            Some("https://msgapi.teams.live.com:443")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/msgapi").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        // Credentials in a URL are refused, and so is an authority a URL
        // parser would split elsewhere.
        assert_eq!(origin("https://user@evil.com/"), None);
        assert_eq!(origin("https://evil.test\\.asm.skype.com/x"), None);
        assert_eq!(origin("https://evil.test%2f.asm.skype.com/x"), None);
        assert_eq!(origin("ftp://x/"), None);
        let base = "http://127.0.0.1:8080/msgapi";
        // The same origin is followed.
        assert_eq!(
            follow_link(base, "http://127.0.0.1:8080/msgapi/v1/x?page=2").as_deref(),
            Some("http://127.0.0.1:8080/msgapi/v1/x?page=2")
        );
        // A path is joined to the base's origin.
        assert_eq!(
            follow_link(base, "/msgapi/v1/x?page=2").as_deref(),
            Some("http://127.0.0.1:8080/msgapi/v1/x?page=2")
        );
        // Another origin, or a scheme-relative link, is not followed.
        assert_eq!(follow_link(base, "http://127.0.0.1:9999/v1/x"), None);
        assert_eq!(follow_link(base, "https://evil.example/v1/x"), None);
        assert_eq!(follow_link(base, "//evil.example/v1/x"), None);
    }

    #[test]
    fn ids_are_percent_encoded_for_paths() {
        assert_eq!(encode("19:abc@thread.v2"), "19%3Aabc%40thread.v2");
        assert_eq!(encode("8:live:.cid.1"), "8%3Alive%3A.cid.1");
    }

    #[test]
    fn system_feeds_are_not_chats() {
        assert!(is_system_feed("48:notifications"));
        assert!(is_system_feed("48:calllogs"));
        // The self-chat is a chat.
        assert!(!is_system_feed("48:notes"));
        assert!(!is_system_feed("19:abc@thread.v2"));
    }
}
