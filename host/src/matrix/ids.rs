//! User ids in the bridge's namespaces: the bot, and each connector's
//! ghosts (`@<prefix><escaped remote id>:<server>`).

use ruma::{OwnedUserId, UserId};
use sha2::{Digest, Sha256};

/// Escapes a remote id into characters allowed in a Matrix localpart,
/// reversibly: `A-Z` becomes `_a`-`_z`, `_` becomes `__`, and any other
/// byte outside `a-z0-9.=-/` becomes `=xx` (hex). (The scheme mautrix
/// bridges use, so ids look familiar to operators.)
pub fn escape_localpart(remote: &str) -> String {
    let mut out = String::with_capacity(remote.len());
    for byte in remote.bytes() {
        match byte {
            b'A'..=b'Z' => {
                out.push('_');
                out.push(byte.to_ascii_lowercase() as char);
            }
            b'_' => out.push_str("__"),
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/' => out.push(byte as char),
            other => out.push_str(&format!("={other:02x}")),
        }
    }
    out
}

/// Reverses [`escape_localpart`]; `None` if it is not a valid escape.
pub fn unescape_localpart(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut chars = escaped.bytes();
    while let Some(byte) = chars.next() {
        match byte {
            b'_' => match chars.next()? {
                b'_' => bytes.push(b'_'),
                c @ b'a'..=b'z' => bytes.push(c.to_ascii_uppercase()),
                _ => return None,
            },
            b'=' => {
                let hi = chars.next()?;
                let lo = chars.next()?;
                bytes.push(u8::from_str_radix(std::str::from_utf8(&[hi, lo]).ok()?, 16).ok()?);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

/// The longest Matrix user id, in bytes (the spec's limit).
const MAX_USER_ID: usize = 255;
/// Marks a ghost localpart shortened to fit: escapes never produce `==`
/// (an `=` is always followed by two hex digits).
const SHORTENED: &str = "==";

/// The bridge's user namespaces on one server.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// The server name.
    pub domain: String,
    bot: OwnedUserId,
}

/// Why a user id could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a valid Matrix user id")]
pub struct BadUserId(String);

impl Namespaces {
    /// The namespaces of bot `bot_localpart` on server `domain`.
    pub fn new(domain: &str, bot_localpart: &str) -> Result<Self, BadUserId> {
        let bot = format!("@{bot_localpart}:{domain}");
        let bot = UserId::parse(bot.as_str()).map_err(|_| BadUserId(bot))?;
        Ok(Self {
            domain: domain.to_owned(),
            bot,
        })
    }

    /// The bot's user id.
    pub fn bot(&self) -> OwnedUserId {
        self.bot.clone()
    }

    /// The bot's localpart.
    pub fn bot_localpart(&self) -> &str {
        self.bot.localpart()
    }

    /// The ghost of `remote_id` for a connector whose ghosts start with
    /// `prefix`. An id whose escape would make the user id longer than
    /// Matrix allows gets a deterministic short form: as much of the
    /// escape as fits, then `==` and 130 bits of its SHA-256, so distinct
    /// remote ids still get distinct ghosts.
    pub fn ghost(&self, prefix: &str, remote_id: &str) -> Result<OwnedUserId, BadUserId> {
        let escaped = escape_localpart(remote_id);
        // `@` + localpart + `:` + domain.
        let room = MAX_USER_ID.saturating_sub(self.domain.len() + 2 + prefix.len());
        let localpart = if escaped.len() <= room {
            escaped
        } else {
            let digest = Sha256::digest(remote_id.as_bytes());
            let hash = base32_lower(&digest[..17]);
            let keep = room.saturating_sub(SHORTENED.len() + hash.len());
            format!("{}{SHORTENED}{hash}", &escaped[..keep.min(escaped.len())])
        };
        let id = format!("@{prefix}{localpart}:{}", self.domain);
        UserId::parse(id.as_str()).map_err(|_| BadUserId(id))
    }

    /// Whether `user` is the bot or a ghost of any of `prefixes`: events
    /// from them are the bridge's own echoes.
    pub fn is_ours<'a>(&self, user: &UserId, prefixes: impl IntoIterator<Item = &'a str>) -> bool {
        if user.server_name().as_str() != self.domain {
            return false;
        }
        let localpart = user.localpart();
        localpart == self.bot.localpart() || prefixes.into_iter().any(|p| localpart.starts_with(p))
    }
}

/// Lowercase RFC 4648 base32 without padding: valid in localparts.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Characters that end a namespace prefix clearly: a prefix must end with
/// one, so `echo_` claims `@echo_alice` but never `@echoes`.
const DELIMITERS: &[char] = &['_', '.', '=', '-', '/'];

/// Checks that a connector's ghost `prefix` is clearly delimited and
/// overlaps neither the bot nor another connector's namespace
/// (`others`: plugin id and prefix). The error names the conflict.
pub fn check_namespace(
    prefix: &str,
    bot_localpart: Option<&str>,
    others: &[(&str, &str)],
) -> Result<(), String> {
    if prefix.len() < 2 || !prefix.ends_with(DELIMITERS) {
        return Err(format!(
            "the ghost prefix `{prefix}` must be at least two characters and end with one of _ . = - /, so that it cannot claim ordinary users' names (e.g. `{prefix}_`)"
        ));
    }
    if let Some(bot) = bot_localpart
        && bot.starts_with(prefix)
    {
        return Err(format!(
            "the ghost prefix `{prefix}` covers the bridge bot @{bot}: a remote user could become the bot; grant another prefix (ghost-prefix in [plugin.<id>])"
        ));
    }
    for (other, theirs) in others {
        if theirs.starts_with(prefix) || prefix.starts_with(theirs) {
            return Err(format!(
                "the ghost prefix `{prefix}` overlaps plugin {other}'s `{theirs}`; grant one of them another prefix (ghost-prefix in [plugin.<id>])"
            ));
        }
    }
    Ok(())
}

/// A plugin's account pattern (the `appservice` grant), compiled to match
/// whole localparts.
///
/// The pattern must be a regular expression of its own (so it cannot
/// close the anchoring group around it: `[0-9]+)|(.*` is refused), must
/// not match the empty localpart or the bot, and must leave every
/// connector's ghosts alone (`ghost_prefixes`, tried with a few names).
pub fn account_pattern(
    pattern: &str,
    bot_localpart: Option<&str>,
    ghost_prefixes: &[(&str, &str)],
) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| {
        format!("the appservice-users pattern `{pattern}` is not a regular expression: {e}")
    })?;
    let anchored = regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("the appservice-users pattern `{pattern}`: {e}"))?;
    if anchored.is_match("") {
        return Err(format!(
            "the appservice-users pattern `{pattern}` matches the empty name"
        ));
    }
    if let Some(bot) = bot_localpart
        && (anchored.is_match(bot) || anchored.is_match(&bot.to_lowercase()))
    {
        return Err(format!(
            "the appservice-users pattern `{pattern}` covers the bridge bot @{bot}"
        ));
    }
    for (plugin, prefix) in ghost_prefixes {
        let samples = ["x", "1", "a1", "alice"].map(|tail| format!("{prefix}{tail}"));
        if let Some(sample) = samples.iter().find(|s| anchored.is_match(s)) {
            return Err(format!(
                "the appservice-users pattern `{pattern}` covers plugin {plugin}'s ghosts (e.g. {sample}); grant a narrower one (appservice-users in [plugin.<id>])"
            ));
        }
    }
    Ok(anchored)
}

/// Whether `localpart` is one a homeserver accepts for a new user:
/// lowercase letters, digits and `._=-/+`.
pub fn is_new_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
}

/// A registration regex matching every localpart that starts with
/// `prefix` on `domain`.
pub fn namespace_regex(prefix: &str, domain: &str) -> String {
    format!("@{}.*:{}", regex::escape(prefix), regex::escape(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_patterns_must_stand_alone_and_leave_the_bot_and_ghosts_alone() {
        let ghosts = [("echo", "echo_"), ("teams", "teams_")];
        let ok = account_pattern("[0-9]+", Some("weftbot"), &ghosts).unwrap();
        assert!(ok.is_match("42") && !ok.is_match("42x") && !ok.is_match("x42"));
        for refused in [
            "[0-9]+)|(.*",
            ".*",
            "[a-z_]+",
            "echo_[0-9]+",
            "weft.*",
            "[0-9]*",
            "(",
        ] {
            assert!(
                account_pattern(refused, Some("weftbot"), &ghosts).is_err(),
                "{refused} was accepted"
            );
        }
        assert!(is_new_localpart("42") && !is_new_localpart("WeftBot") && !is_new_localpart(""));
    }

    #[test]
    fn remote_ids_escape_to_valid_localparts_and_back() {
        for remote in ["8:live:Alice_Smith", "bob", "a b/c+d=e", "ÜNICODE"] {
            let escaped = escape_localpart(remote);
            // Only characters the spec allows in localparts.
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/".contains(&b)),
                "{escaped}"
            );
            // And the escape reverses exactly.
            assert_eq!(unescape_localpart(&escaped).as_deref(), Some(remote));
        }
        assert_eq!(escape_localpart("8:live:Alice"), "8=3alive=3a_alice");
    }

    fn namespaces() -> Namespaces {
        Namespaces::new("example.org", "weftbot").unwrap()
    }

    #[test]
    fn only_the_bot_and_ghosts_on_our_server_are_ours() {
        let ns = namespaces();
        let prefixes = ["echo_"];
        assert!(ns.is_ours(&ns.bot(), prefixes));
        assert!(ns.is_ours(&ns.ghost("echo_", "alice").unwrap(), prefixes));
        // A real user, or a look-alike on another server, is not.
        assert!(!ns.is_ours(<&UserId>::try_from("@alice:example.org").unwrap(), prefixes));
        assert!(!ns.is_ours(<&UserId>::try_from("@echo_x:evil.org").unwrap(), prefixes));
    }

    #[test]
    fn a_remote_id_too_long_for_a_user_id_gets_a_short_form_that_stays_distinct() {
        let ns = namespaces();
        let long = "x".repeat(300);
        let longer = format!("{long}y");
        let one = ns.ghost("echo_", &long).unwrap();
        let two = ns.ghost("echo_", &longer).unwrap();
        // Both fit Matrix's 255-byte limit instead of panicking...
        assert!(one.as_str().len() <= 255, "{}", one.as_str().len());
        assert!(two.as_str().len() <= 255);
        // ...are distinct, and are the same every time.
        assert_ne!(one, two);
        assert_eq!(one, ns.ghost("echo_", &long).unwrap());
        assert!(one.localpart().contains("=="), "{one}");
        // Ids with characters that escape to three bytes each too.
        let wide = ns.ghost("echo_", &"Ü".repeat(200)).unwrap();
        assert!(wide.as_str().len() <= 255);
        // Short ids keep their readable, reversible form.
        assert_eq!(
            ns.ghost("echo_", "Bob").unwrap().as_str(),
            "@echo__bob:example.org"
        );
    }

    #[test]
    fn a_namespace_must_be_delimited_and_must_not_overlap_the_bot_or_another_connector() {
        // `a` would claim @alice.
        assert!(check_namespace("a", Some("weftbot"), &[]).is_err());
        assert!(check_namespace("echo", Some("weftbot"), &[]).is_err());
        // `weft_` is fine beside the bot `weftbot`; `weft` is not delimited, and
        // `w.` is, but would still not cover `weftbot`.
        assert!(check_namespace("weft_", Some("weftbot"), &[]).is_ok());
        let bot = check_namespace("weftbo-", Some("weftbo-t"), &[]).unwrap_err();
        assert!(bot.contains("bridge bot"), "{bot}");
        // Overlapping another connector either way is refused, naming it.
        let overlap = check_namespace("teams_", None, &[("other", "teams_x_")]).unwrap_err();
        assert!(overlap.contains("other"), "{overlap}");
        assert!(check_namespace("teams_x_", None, &[("teams", "teams_")]).is_err());
        assert!(check_namespace("teams_", None, &[("echo", "echo_")]).is_ok());
    }

    #[test]
    fn namespace_regexes_escape_dots() {
        let regex =
            regex::Regex::new(&format!("^{}$", namespace_regex("echo_", "example.org"))).unwrap();
        assert!(regex.is_match("@echo_alice:example.org"));
        // An unescaped dot would let `exampleXorg` through.
        assert!(!regex.is_match("@echo_alice:exampleXorg"));
    }
}
