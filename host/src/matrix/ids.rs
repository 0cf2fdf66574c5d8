//! User ids in the bridge's namespaces: the bot, and each connector's
//! ghosts (`@<prefix><escaped remote id>:<server>`).

use ruma::{OwnedUserId, UserId};

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

/// The bridge's user namespaces on one server.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// The server name.
    pub domain: String,
    /// The bot's localpart.
    pub bot_localpart: String,
}

impl Namespaces {
    /// The bot's user id.
    pub fn bot(&self) -> OwnedUserId {
        UserId::parse(format!("@{}:{}", self.bot_localpart, self.domain))
            .expect("the bot's id is valid")
    }

    /// The ghost of `remote_id` for a connector whose ghosts start with
    /// `prefix`.
    pub fn ghost(&self, prefix: &str, remote_id: &str) -> OwnedUserId {
        UserId::parse(format!(
            "@{prefix}{}:{}",
            escape_localpart(remote_id),
            self.domain
        ))
        .expect("escaped localparts are valid")
    }

    /// Whether `user` is the bot or a ghost of any of `prefixes`: events
    /// from them are the bridge's own echoes.
    pub fn is_ours<'a>(&self, user: &UserId, prefixes: impl IntoIterator<Item = &'a str>) -> bool {
        if user.server_name().as_str() != self.domain {
            return false;
        }
        let localpart = user.localpart();
        localpart == self.bot_localpart || prefixes.into_iter().any(|p| localpart.starts_with(p))
    }

    /// The remote id of a ghost of `prefix`, if `user` is one.
    pub fn remote_of(&self, prefix: &str, user: &UserId) -> Option<String> {
        if user.server_name().as_str() != self.domain {
            return None;
        }
        unescape_localpart(user.localpart().strip_prefix(prefix)?)
    }
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

    #[test]
    fn only_the_bot_and_ghosts_on_our_server_are_ours() {
        let ns = Namespaces {
            domain: "example.org".into(),
            bot_localpart: "weftbot".into(),
        };
        let prefixes = ["echo_"];
        assert!(ns.is_ours(&ns.bot(), prefixes));
        assert!(ns.is_ours(&ns.ghost("echo_", "alice"), prefixes));
        // A real user, or a look-alike on another server, is not.
        assert!(!ns.is_ours(<&UserId>::try_from("@alice:example.org").unwrap(), prefixes));
        assert!(!ns.is_ours(<&UserId>::try_from("@echo_x:evil.org").unwrap(), prefixes));
        assert_eq!(
            ns.remote_of("echo_", &ns.ghost("echo_", "Bob")).as_deref(),
            Some("Bob")
        );
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
