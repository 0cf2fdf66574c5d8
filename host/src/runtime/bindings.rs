//! Host bindings for `weft:plugin@0.1.0`, generated from `wit/v0.1`.
//!
//! The connector world's imports are a superset of every other world's, so
//! the other worlds reuse its import bindings (`with:`) and one `Linker`
//! serves all three. Every import is `async` (HTTP and storage await) and
//! `trappable` (a host bug traps; expected failures are WIT error values).

#![allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]

/// The `connector` world, and the shared imports.
pub mod connector {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "weft:plugin/connector@0.1.0",
        imports: { default: async | trappable },
        exports: { default: async },
        // Remote events are stored in the outbox as they came.
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
        },
    });
}

/// Generates a provider world whose imports are the connector world's, so
/// one linker and one set of `Host` impls serve every role.
macro_rules! provider_world {
    ($world:literal) => {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: $world,
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
                "wasi:random": wasmtime_wasi::p2::bindings::random,
                "weft:plugin/types": super::connector::weft::plugin::types,
                "weft:plugin/http": super::connector::weft::plugin::http,
                "weft:plugin/kv": super::connector::weft::plugin::kv,
                "weft:plugin/log": super::connector::weft::plugin::log,
                "weft:plugin/config": super::connector::weft::plugin::config,
            },
        });
    };
}

/// The `login-provider` world.
pub mod login_provider {
    provider_world!("weft:plugin/login-provider@0.1.0");
}

/// The `credential-provider` world.
pub mod credential_provider {
    provider_world!("weft:plugin/credential-provider@0.1.0");
}

pub use connector::weft::plugin as imports;

impl From<imports::matrix::BridgeStateKind> for crate::logins::StateEvent {
    fn from(kind: imports::matrix::BridgeStateKind) -> Self {
        use imports::matrix::BridgeStateKind as Kind;
        match kind {
            Kind::Connecting => Self::Connecting,
            Kind::Connected => Self::Connected,
            Kind::TransientDisconnect => Self::TransientDisconnect,
            Kind::BadCredentials => Self::BadCredentials,
            Kind::UnknownError => Self::UnknownError,
            Kind::LoggedOut => Self::LoggedOut,
        }
    }
}
