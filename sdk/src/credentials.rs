//! The credential-provider role: issues credentials, e.g. per-user Matrix
//! accounts provisioned through the appservice.

use crate::routes::{Request, Response};
use crate::{Error, Result};

/// A request for credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRequest {
    /// Who asks, in the provider's terms.
    pub subject: String,
    /// Further facts about the subject.
    pub claims: Vec<(String, String)>,
}

/// Credentials for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The Matrix user id.
    pub user_id: String,
    /// The access token.
    pub access_token: String,
    /// The homeserver to use it with.
    pub homeserver_url: String,
    /// Anything else, by name.
    pub extra: Vec<(String, String)>,
}

/// A credential provider. Every method defaults to "unsupported" (and
/// every route to 404).
pub trait CredentialProvider {
    /// Issues credentials for the request's subject.
    fn issue(&mut self, request: CredentialRequest) -> Result<Credential> {
        let _ = request;
        Err(Error::unsupported("issue"))
    }

    /// Answers a request for one of the routes the operator mounted for
    /// this plugin (see [`crate::routes`]). An error becomes a JSON error
    /// response: 400 for invalid input, 401 for bad credentials, 404 for
    /// unsupported, 503 for a transient failure, 500 for an internal one.
    fn handle_request(&mut self, request: Request) -> Result<Response> {
        let _ = request;
        Ok(Response::not_found())
    }
}
