//! Capture pages: a one-time web page the host serves where the user
//! pastes material for a login process, e.g. a browser's token cache.
//!
//! A login flow opens a page, shows its URL in a `display_and_wait` step
//! (as a QR code or a link), and on each wait asks [`take`] whether the
//! user sent something. The host enforces the page's security rules; see
//! `wit/v0.1/capture.wit`.
//!
//! ```no_run
//! use weft_sdk::capture::{self, Page};
//! # fn f() -> weft_sdk::Result<()> {
//! let session = capture::open(&Page {
//!     title: "Log in to Example".into(),
//!     steps: vec!["Open example.com and sign in.".into(), "Paste the copied text below.".into()],
//!     snippet: Some("copy(JSON.stringify(localStorage))".into()),
//!     field_label: "The copied text".into(),
//! })?;
//! // Show session.url; later, in the wait:
//! if let Some(material) = capture::take(&session.id)? {
//!     // parse it
//! }
//! # Ok(()) }
//! ```

use crate::Error;
use crate::wit::imports::weft::plugin::capture as wit;

/// What the page says (plain text; the host escapes it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The heading.
    pub title: String,
    /// What to do, one step each.
    pub steps: Vec<String>,
    /// Text the user copies, e.g. a console command.
    pub snippet: Option<String>,
    /// The paste box's label.
    pub field_label: String,
}

/// An open capture session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// Its id, for [`take`] and [`close`].
    pub id: String,
    /// The page's URL, to show the user.
    pub url: String,
}

/// Opens a capture page for this login process. Fails outside a login
/// process, or if the host serves no pages.
pub fn open(page: &Page) -> Result<Session, Error> {
    let page = wit::CapturePage {
        title: page.title.clone(),
        steps: page.steps.clone(),
        snippet: page.snippet.clone(),
        field_label: page.field_label.clone(),
    };
    let session = wit::open(&page)?;
    Ok(Session {
        id: session.id,
        url: session.url,
    })
}

/// What the user sent, once; `None` while nothing was.
pub fn take(id: &str) -> Result<Option<String>, Error> {
    wit::take(id).map_err(Error::from)
}

/// Closes a session; its page answers 404 afterwards.
pub fn close(id: &str) {
    wit::close(id);
}
