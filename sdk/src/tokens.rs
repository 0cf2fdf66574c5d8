//! Token functions: exported by login providers, imported by connectors.
//!
//! A connector calls [`refresh`] or [`from_captured`]; the host routes the
//! call to the login provider its manifest names, so the connector uses the
//! provider's code without linking it in. A login provider implements
//! [`TokenProvider`].

use std::fmt;

use crate::wit::imports::weft::plugin::tokens as wit;

/// A set of tokens for one account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// When the access token expires, in Unix seconds.
    pub expires_at: u64,
    /// The refresh token, if one was issued.
    pub refresh_token: Option<String>,
    /// The scopes the access token carries.
    pub scopes: Vec<String>,
    /// The account, in the provider's terms.
    pub account_id: Option<String>,
}

/// Why no tokens were returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The grant was rejected: the user must log in again.
    InvalidGrant(String),
    /// A temporary failure.
    Transient(String),
    /// The input could not be understood.
    InvalidInput(String),
    /// No provider serves the call (set by the host).
    Unavailable(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidGrant(m) => write!(f, "grant rejected: {m}"),
            Self::Transient(m) => write!(f, "temporary failure: {m}"),
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Unavailable(m) => write!(f, "no token provider: {m}"),
        }
    }
}

impl std::error::Error for TokenError {}

impl From<TokenError> for crate::Error {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::InvalidGrant(m) => crate::Error::BadCredentials(m),
            TokenError::Transient(m) | TokenError::Unavailable(m) => crate::Error::Transient(m),
            TokenError::InvalidInput(m) => crate::Error::InvalidInput(m),
        }
    }
}

/// Converts between the SDK's token types and one world's generated ones
/// (the connector's import and the login provider's export are generated
/// separately but have the same shape).
macro_rules! token_conversions {
    ($wit:path) => {
        const _: () = {
            use $wit as w;

            impl From<w::TokenSet> for $crate::tokens::TokenSet {
                fn from(t: w::TokenSet) -> Self {
                    Self {
                        access_token: t.access_token,
                        expires_at: t.expires_at,
                        refresh_token: t.refresh_token,
                        scopes: t.scopes,
                        account_id: t.account_id,
                    }
                }
            }

            impl From<$crate::tokens::TokenSet> for w::TokenSet {
                fn from(t: $crate::tokens::TokenSet) -> Self {
                    Self {
                        access_token: t.access_token,
                        expires_at: t.expires_at,
                        refresh_token: t.refresh_token,
                        scopes: t.scopes,
                        account_id: t.account_id,
                    }
                }
            }

            impl From<w::TokenError> for $crate::tokens::TokenError {
                fn from(e: w::TokenError) -> Self {
                    match e {
                        w::TokenError::InvalidGrant(m) => Self::InvalidGrant(m),
                        w::TokenError::Transient(m) => Self::Transient(m),
                        w::TokenError::InvalidInput(m) => Self::InvalidInput(m),
                        w::TokenError::Unavailable(m) => Self::Unavailable(m),
                    }
                }
            }

            impl From<$crate::tokens::TokenError> for w::TokenError {
                fn from(e: $crate::tokens::TokenError) -> Self {
                    match e {
                        $crate::tokens::TokenError::InvalidGrant(m) => Self::InvalidGrant(m),
                        $crate::tokens::TokenError::Transient(m) => Self::Transient(m),
                        $crate::tokens::TokenError::InvalidInput(m) => Self::InvalidInput(m),
                        $crate::tokens::TokenError::Unavailable(m) => Self::Unavailable(m),
                    }
                }
            }
        };
    };
}

token_conversions!(crate::wit::imports::weft::plugin::tokens);
token_conversions!(crate::wit::tokens_export);

/// Asks the connector's login provider to extract tokens for `scopes` from
/// material a login flow captured.
pub fn from_captured(material: &str, scopes: &[String]) -> Result<TokenSet, TokenError> {
    wit::from_captured(material, scopes)
        .map(Into::into)
        .map_err(Into::into)
}

/// Asks the connector's login provider to redeem a refresh token.
pub fn refresh(refresh_token: &str, scopes: &[String]) -> Result<TokenSet, TokenError> {
    wit::refresh(refresh_token, scopes)
        .map(Into::into)
        .map_err(Into::into)
}

/// What a login provider implements. Every method defaults to
/// "unsupported".
pub trait TokenProvider {
    /// Extracts tokens for `scopes` from captured material.
    fn tokens_from_captured(
        &mut self,
        material: &str,
        scopes: &[String],
    ) -> Result<TokenSet, TokenError> {
        let _ = (material, scopes);
        Err(TokenError::InvalidInput(
            "`from-captured` is not implemented by this provider".into(),
        ))
    }

    /// Redeems a refresh token for fresh tokens for `scopes`.
    fn refresh(&mut self, refresh_token: &str, scopes: &[String]) -> Result<TokenSet, TokenError> {
        let _ = (refresh_token, scopes);
        Err(TokenError::InvalidInput(
            "`refresh` is not implemented by this provider".into(),
        ))
    }
}
