//! The Matrix side's plumbing: the homeserver client, user ids in the
//! bridge's namespaces, and the appservice registration.

pub mod bot_token;
pub mod client;
pub mod ids;
pub mod registration;

pub use client::{HomeserverClient, HsError};
pub use ids::Namespaces;
