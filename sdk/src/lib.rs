//! Write weft plugins: Matrix-bridge connectors, login providers and
//! credential providers that run as sandboxed WebAssembly components.
//!
//! A plugin is one type that implements the trait of its role, registered
//! with one macro:
//!
//! ```no_run
//! use weft_sdk::{Connector, Login, Result};
//!
//! #[derive(Default)]
//! struct Hello;
//!
//! impl Login for Hello {}
//!
//! impl Connector for Hello {
//!     fn start(&mut self) -> Result<()> {
//!         weft_sdk::timers::set_interval("poll", std::time::Duration::from_secs(30))?;
//!         Ok(())
//!     }
//!
//!     fn on_timer(&mut self, name: &str) -> Result<()> {
//!         weft_sdk::info!("timer {name} fired");
//!         Ok(())
//!     }
//! }
//!
//! weft_sdk::register_connector!(Hello);
//! ```
//!
//! Every trait method has a default, so a plugin implements only what it
//! supports. The host gives a plugin nothing but the imports in this crate:
//! [`http`] (to hosts the operator granted), [`kv`] (its own namespace),
//! [`timers`], [`log`](crate::info), [`config`], [`session`], [`events`],
//! [`time`] and [`tokens`]. No files, environment or sockets.
//!
//! Build a plugin into a component with `cargo weft build` (the
//! `cargo-weft` crate beside this one); see the repository's README.
#![deny(missing_docs)]

// Lets the generated export macros name this crate as `weft_sdk` both here
// and in the plugin crates that expand them.
extern crate self as weft_sdk;

mod error;
mod export;

pub mod config;
pub mod connector;
pub mod credentials;
pub mod events;
pub mod http;
pub mod kv;
pub mod log;
pub mod login;
pub mod session;
pub mod time;
pub mod timers;
pub mod tokens;

pub use connector::{Connector, MatrixEdit, MatrixMessage, MatrixReaction};
pub use credentials::{Credential, CredentialProvider, CredentialRequest};
pub use error::{Error, Result};
pub use login::{
    CompleteStep, CookieField, CookieSource, CookieSourceKind, CookiesStep, DisplayKind,
    DisplayStep, FieldKind, InputField, Login, LoginStep, StepInput, StepParams,
};
pub use tokens::{TokenError, TokenProvider, TokenSet};

/// The version of the `weft:plugin` WIT package this SDK speaks.
pub const API_VERSION: &str = "0.1.0";

#[doc(hidden)]
pub use serde_json as __serde_json;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
pub mod __rt {
    pub use crate::export::{ConnectorExport, CredentialProviderExport, LoginProviderExport};
}

/// The raw bindings generated from the WIT package. Plugin authors use the
/// rest of this crate instead; this is public only so that the registration
/// macros can reach it from the plugin's crate.
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod wit {
    /// The connector world. Its imports are a superset of every other
    /// world's, so the other worlds reuse these import bindings.
    pub use weft_sdk_bindings as connector;

    /// Generates a provider world whose imports are the connector world's
    /// (one set of import types, so the SDK's helpers serve every role).
    macro_rules! provider_world {
        ($world:literal, $export_macro:literal, $module:literal) => {
            wit_bindgen::generate!({
                path: "../wit/v0.1",
                world: $world,
                with: {
                    "weft:plugin/types@0.1.0": crate::wit::connector::weft::plugin::types,
                    "weft:plugin/http@0.1.0": crate::wit::connector::weft::plugin::http,
                    "weft:plugin/kv@0.1.0": crate::wit::connector::weft::plugin::kv,
                    "weft:plugin/log@0.1.0": crate::wit::connector::weft::plugin::log,
                    "weft:plugin/config@0.1.0": crate::wit::connector::weft::plugin::config,
                    "wasi:clocks/wall-clock@0.2.12": crate::wit::connector::wasi::clocks::wall_clock,
                    "wasi:clocks/monotonic-clock@0.2.12": crate::wit::connector::wasi::clocks::monotonic_clock,
                    "wasi:random/random@0.2.12": crate::wit::connector::wasi::random::random,
                    "wasi:io/poll@0.2.12": crate::wit::connector::wasi::io::poll,
                },
                generate_all,
                pub_export_macro: true,
                export_macro_name: $export_macro,
                default_bindings_module: $module,
                runtime_path: "weft_sdk::__wit_bindgen::rt",
            });
        };
    }

    /// The login-provider world.
    pub mod login_provider {
        provider_world!(
            "weft:plugin/login-provider@0.1.0",
            "export_login_provider",
            "weft_sdk::wit::login_provider"
        );
    }

    /// The credential-provider world.
    pub mod credential_provider {
        provider_world!(
            "weft:plugin/credential-provider@0.1.0",
            "export_credential_provider",
            "weft_sdk::wit::credential_provider"
        );
    }

    pub(crate) use connector::weft::plugin as imports;
}

/// Registers `$ty` as this component's connector.
///
/// `$ty` implements [`Connector`] and [`Login`], and [`Default`]: the host
/// creates one value per instance, on the first call.
#[macro_export]
macro_rules! register_connector {
    ($ty:ty) => {
        const _: () = {
            type __WeftConnector = $crate::__rt::ConnectorExport<$ty>;
            $crate::wit::connector::export_connector!(
                __WeftConnector with_types_in $crate::wit::connector
            );
        };
    };
}

/// Registers `$ty` as this component's login provider.
///
/// `$ty` implements [`Login`], [`TokenProvider`] and [`Default`].
#[macro_export]
macro_rules! register_login_provider {
    ($ty:ty) => {
        const _: () = {
            type __WeftLoginProvider = $crate::__rt::LoginProviderExport<$ty>;
            $crate::wit::login_provider::export_login_provider!(
                __WeftLoginProvider with_types_in $crate::wit::login_provider
            );
        };
    };
}

/// Registers `$ty` as this component's credential provider.
///
/// `$ty` implements [`CredentialProvider`] and [`Default`].
#[macro_export]
macro_rules! register_credential_provider {
    ($ty:ty) => {
        const _: () = {
            type __WeftCredentialProvider = $crate::__rt::CredentialProviderExport<$ty>;
            $crate::wit::credential_provider::export_credential_provider!(
                __WeftCredentialProvider with_types_in $crate::wit::credential_provider
            );
        };
    };
}
