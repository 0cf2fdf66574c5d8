//! The claims of an id token, read without verifying it: they only name
//! the account for display and as a stable id, and the token came straight
//! from Microsoft's token endpoint or the user's own browser cache.

use serde_json::Value;

use crate::crypto::decode_base64;
use crate::json::str_field;

/// The claims that name an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IdClaims {
    oid: Option<String>,
    tid: Option<String>,
    sub: Option<String>,
    name: Option<String>,
    username: Option<String>,
}

impl IdClaims {
    /// The claims of JWT `token`; `None` if it is not a JWT with a JSON
    /// payload.
    pub(crate) fn from_token(token: &str) -> Option<Self> {
        let payload = token.split('.').nth(1)?;
        let claims: Value = serde_json::from_slice(&decode_base64(payload)?).ok()?;
        let text = |name: &str| str_field(&claims, name).map(str::to_owned);
        Some(Self {
            oid: text("oid"),
            tid: text("tid"),
            sub: text("sub"),
            name: text("name"),
            username: text("preferred_username")
                .or_else(|| text("email"))
                .or_else(|| text("upn"))
                .or_else(|| text("unique_name")),
        })
    }

    /// The account id as MSAL spells it (`<oid>.<tid>`, its
    /// `homeAccountId`), else the object id or subject.
    pub(crate) fn account_id(&self) -> Option<String> {
        match (&self.oid, &self.tid) {
            (Some(oid), Some(tid)) => Some(format!("{oid}.{tid}")),
            (Some(oid), None) => Some(oid.clone()),
            _ => self.sub.clone(),
        }
    }

    /// The display name, else the sign-in name.
    pub(crate) fn display_name(&self) -> Option<&str> {
        self.name.as_deref().or(self.username.as_deref())
    }

    /// The sign-in name, else the display name.
    pub(crate) fn username(&self) -> Option<&str> {
        self.username.as_deref().or(self.name.as_deref())
    }
}

/// Builds an unsigned JWT of `claims` (for tests).
#[cfg(test)]
pub(crate) fn token_for_test(claims: &Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(b"{\"alg\":\"none\"}"),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claims_name_the_account_like_msal_does() {
        let token = token_for_test(&json!({
            "oid": "00000000-0000-0000-1234-567890abcdef",
            "tid": "9188040d-6c67-4c5b-b112-36a304b66dad",
            "name": "Ada Lovelace",
            "preferred_username": "ada@example.com",
        }));
        let claims = IdClaims::from_token(&token).unwrap();
        // `<oid>.<tid>` is MSAL's homeAccountId.
        assert_eq!(
            claims.account_id().as_deref(),
            Some("00000000-0000-0000-1234-567890abcdef.9188040d-6c67-4c5b-b112-36a304b66dad")
        );
        assert_eq!(claims.display_name(), Some("Ada Lovelace"));
        assert_eq!(claims.username(), Some("ada@example.com"));
    }

    #[test]
    fn a_token_that_is_not_a_jwt_has_no_claims() {
        assert_eq!(IdClaims::from_token("EwA-opaque"), None);
        assert_eq!(IdClaims::from_token("a.!!!.c"), None);
        assert_eq!(IdClaims::from_token(""), None);
    }
}
