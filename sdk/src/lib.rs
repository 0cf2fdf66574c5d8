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
//! [`time`] and [`tokens`], and for a credential provider [`appservice`]
//! (and [`routes`] it serves). No files, environment or sockets.
//!
//! Build a plugin into a component with `cargo weft build` (the
//! `cargo-weft` crate beside this one); see the repository's README.
#![deny(missing_docs)]

// Lets the generated export macros name this crate as `weft_sdk` both here
// and in the plugin crates that expand them.
extern crate self as weft_sdk;

mod error;
mod export;

pub mod appservice;
pub mod capture;
pub mod config;
pub mod connector;
pub mod credentials;
pub mod events;
pub mod http;
pub mod kv;
pub mod log;
pub mod login;
pub mod routes;
pub mod session;
pub mod time;
pub mod timers;
pub mod tokens;

pub use connector::{Connector, MatrixEdit, MatrixMedia, MatrixMessage, MatrixReaction};
pub use credentials::{Credential, CredentialProvider, CredentialRequest};
pub use error::{Error, Result};
pub use login::{
    CompleteStep, Completion, CookieField, CookieSource, CookieSourceKind, CookiesStep,
    DisplayKind, DisplayStep, FieldKind, InputField, Login, LoginStep, ProviderGrant, StepInput,
    StepParams,
};
pub use tokens::{TokenError, TokenProvider, TokenSet};

/// The version of the `weft:plugin` WIT package this SDK speaks.
pub const API_VERSION: &str = "0.1.3";

#[doc(hidden)]
pub use serde_json as __serde_json;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
pub mod __rt {
    pub use crate::export::Export;
}

/// The raw bindings generated from the WIT package. Plugin authors use the
/// rest of this crate instead; this is public only so that the registration
/// macros can reach it from the plugin's crate.
///
/// The imports are generated once, in `imports`. Each exported interface
/// is generated once, in a world of its own that exports only it: a
/// connector links `network_api` and `login_flow`, a login provider
/// `login_flow` and `tokens`, a credential provider `credentials`. So the
/// same `login-flow` code serves every role, and a component declares only
/// the exports its registration macro links.
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod wit {
    /// Every host import (the connector world's imports are a superset of
    /// every other world's).
    pub mod imports {
        wit_bindgen::generate!({
            path: "../wit/v0.1",
            inline: "
                package weft:sdk-bindings;
                world imports {
                    include weft:plugin/host-imports@0.1.3;
                    import weft:plugin/timers@0.1.3;
                    import weft:plugin/session@0.1.3;
                    import weft:plugin/matrix@0.1.3;
                    import weft:plugin/tokens@0.1.3;
                    import weft:plugin/capture@0.1.3;
                    import weft:plugin/appservice@0.1.3;
                }
            ",
            world: "weft:sdk-bindings/imports",
            generate_all,
            runtime_path: "weft_sdk::__wit_bindgen::rt",
        });
    }

    /// Generates the bindings of a world that exports one interface, with
    /// the shared `types` interface taken from `imports`.
    macro_rules! export_world {
        ($world:literal, $inline:literal, $export_macro:literal, $module:literal) => {
            wit_bindgen::generate!({
                path: "../wit/v0.1",
                inline: $inline,
                world: $world,
                with: {
                    "weft:plugin/types@0.1.3": crate::wit::imports::weft::plugin::types,
                },
                generate_all,
                pub_export_macro: true,
                export_macro_name: $export_macro,
                default_bindings_module: $module,
                runtime_path: "weft_sdk::__wit_bindgen::rt",
            });
        };
        // A world whose interface uses no shared type.
        (standalone $world:literal, $inline:literal, $export_macro:literal, $module:literal) => {
            wit_bindgen::generate!({
                path: "../wit/v0.1",
                inline: $inline,
                world: $world,
                generate_all,
                pub_export_macro: true,
                export_macro_name: $export_macro,
                default_bindings_module: $module,
                runtime_path: "weft_sdk::__wit_bindgen::rt",
            });
        };
    }

    /// `network-api`, exported by connectors.
    pub mod network_api {
        export_world!(
            "weft:sdk-bindings/network-api",
            "package weft:sdk-bindings; world network-api { export weft:plugin/network-api@0.1.3; }",
            "export_network_api",
            "weft_sdk::wit::network_api"
        );
    }

    /// `login-flow`, exported by connectors and login providers.
    pub mod login_flow {
        export_world!(
            "weft:sdk-bindings/login-flow",
            "package weft:sdk-bindings; world login-flow { export weft:plugin/login-flow@0.1.3; }",
            "export_login_flow",
            "weft_sdk::wit::login_flow"
        );
    }

    /// `media-handler`, exported by connectors (since 0.1.1).
    pub mod media_handler {
        export_world!(
            "weft:sdk-bindings/media-handler",
            "package weft:sdk-bindings; world media-handler { export weft:plugin/media-handler@0.1.3; }",
            "export_media_handler",
            "weft_sdk::wit::media_handler"
        );
    }

    /// `receipt-handler`, exported by connectors (since 0.1.1).
    pub mod receipt_handler {
        export_world!(
            "weft:sdk-bindings/receipt-handler",
            "package weft:sdk-bindings; world receipt-handler { export weft:plugin/receipt-handler@0.1.3; }",
            "export_receipt_handler",
            "weft_sdk::wit::receipt_handler"
        );
    }

    /// `backfill`, exported by connectors (since 0.1.1). It uses the
    /// `matrix` import's message types.
    pub mod backfill {
        wit_bindgen::generate!({
            path: "../wit/v0.1",
            inline: "package weft:sdk-bindings; world backfill { export weft:plugin/backfill@0.1.3; }",
            world: "weft:sdk-bindings/backfill",
            with: {
                "weft:plugin/types@0.1.3": crate::wit::imports::weft::plugin::types,
                "weft:plugin/matrix@0.1.3": crate::wit::imports::weft::plugin::matrix,
            },
            generate_all,
            pub_export_macro: true,
            export_macro_name: "export_backfill",
            default_bindings_module: "weft_sdk::wit::backfill",
            runtime_path: "weft_sdk::__wit_bindgen::rt",
        });
    }

    /// `provider-login`, exported by connectors (since 0.1.2).
    pub mod provider_login {
        export_world!(
            "weft:sdk-bindings/provider-login",
            "package weft:sdk-bindings; world provider-login { export weft:plugin/provider-login@0.1.3; }",
            "export_provider_login",
            "weft_sdk::wit::provider_login"
        );
    }

    /// `tokens`, exported by login providers (connectors import it).
    pub mod tokens {
        export_world!(
            standalone "weft:sdk-bindings/tokens",
            "package weft:sdk-bindings; world tokens { export weft:plugin/tokens@0.1.3; }",
            "export_tokens",
            "weft_sdk::wit::tokens"
        );
    }

    /// `credentials`, exported by credential providers.
    pub mod credentials {
        export_world!(
            "weft:sdk-bindings/credentials",
            "package weft:sdk-bindings; world credentials { export weft:plugin/credentials@0.1.3; }",
            "export_credentials",
            "weft_sdk::wit::credentials"
        );
    }

    /// `http-handler`, exported by credential providers (since 0.1.3).
    /// It uses the `http` import's method type.
    pub mod http_handler {
        wit_bindgen::generate!({
            path: "../wit/v0.1",
            inline: "package weft:sdk-bindings; world http-handler { export weft:plugin/http-handler@0.1.3; }",
            world: "weft:sdk-bindings/http-handler",
            with: {
                "weft:plugin/types@0.1.3": crate::wit::imports::weft::plugin::types,
                "weft:plugin/http@0.1.3": crate::wit::imports::weft::plugin::http,
            },
            generate_all,
            pub_export_macro: true,
            export_macro_name: "export_http_handler",
            default_bindings_module: "weft_sdk::wit::http_handler",
            runtime_path: "weft_sdk::__wit_bindgen::rt",
        });
    }

    pub(crate) use exports::{
        backfill_export, login_flow_export, media_handler_export, network_api_export,
        provider_login_export, receipt_handler_export, tokens_export,
    };

    /// Short paths to the generated export modules.
    pub(crate) mod exports {
        pub(crate) use crate::wit::backfill::exports::weft::plugin::backfill as backfill_export;
        pub(crate) use crate::wit::login_flow::exports::weft::plugin::login_flow as login_flow_export;
        pub(crate) use crate::wit::media_handler::exports::weft::plugin::media_handler as media_handler_export;
        pub(crate) use crate::wit::network_api::exports::weft::plugin::network_api as network_api_export;
        pub(crate) use crate::wit::provider_login::exports::weft::plugin::provider_login as provider_login_export;
        pub(crate) use crate::wit::receipt_handler::exports::weft::plugin::receipt_handler as receipt_handler_export;
        pub(crate) use crate::wit::tokens::exports::weft::plugin::tokens as tokens_export;
    }
}

/// Registers `$ty` as this component's connector.
///
/// `$ty` implements [`Connector`] and [`Login`], and [`Default`]: the host
/// creates one value per instance, on the first call.
#[macro_export]
macro_rules! register_connector {
    ($ty:ty) => {
        const _: () = {
            type __WeftPlugin = $crate::__rt::Export<$ty>;
            $crate::wit::network_api::export_network_api!(
                __WeftPlugin with_types_in $crate::wit::network_api
            );
            $crate::wit::login_flow::export_login_flow!(
                __WeftPlugin with_types_in $crate::wit::login_flow
            );
            $crate::wit::media_handler::export_media_handler!(
                __WeftPlugin with_types_in $crate::wit::media_handler
            );
            $crate::wit::receipt_handler::export_receipt_handler!(
                __WeftPlugin with_types_in $crate::wit::receipt_handler
            );
            $crate::wit::backfill::export_backfill!(
                __WeftPlugin with_types_in $crate::wit::backfill
            );
            $crate::wit::provider_login::export_provider_login!(
                __WeftPlugin with_types_in $crate::wit::provider_login
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
            type __WeftPlugin = $crate::__rt::Export<$ty>;
            $crate::wit::login_flow::export_login_flow!(
                __WeftPlugin with_types_in $crate::wit::login_flow
            );
    $crate::wit::tokens::export_tokens!(__WeftPlugin with_types_in $crate::wit::tokens);
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
            type __WeftPlugin = $crate::__rt::Export<$ty>;
            $crate::wit::credentials::export_credentials!(
                __WeftPlugin with_types_in $crate::wit::credentials
            );
            $crate::wit::http_handler::export_http_handler!(
                __WeftPlugin with_types_in $crate::wit::http_handler
            );
        };
    };
}
