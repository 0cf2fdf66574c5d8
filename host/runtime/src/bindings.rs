//! Host bindings for `weft:plugin@0.1.3`, generated from `wit/v0.1`, each
//! exported interface once. Components built against an earlier 0.1 link too:
//! wasmtime matches semver-compatible names, and the interfaces later 0.1 versions
//! added are optional exports.
//!
//! The connector world's imports are a superset of every other world's,
//! so one `Linker` built from it serves every plugin. Exports are not
//! bound per world: each exported interface has one generated `Guest`
//! (with its `GuestIndices`), looked up in whichever component exports it,
//! so `login-flow` is the same code for a connector and a login provider.
//! Every import is `async` (HTTP and storage await) and `trappable` (a
//! host bug traps; expected failures are WIT error values).
//!
//! These types stay inside the runtime: the host sees the plain types of
//! [`crate::events`], [`crate::connector`] and [`crate::login_flow`].

#![allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]

/// The imports, and the connector's exports (`network-api`, `login-flow`).
pub(crate) mod connector {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "weft:plugin/connector@0.1.3",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
        },
    });
}

/// What no connector has: the exports `tokens` (login providers),
/// `credentials` and `http-handler` (credential providers), and the
/// `appservice` import (credential providers). The other imports are the
/// connector's, reused.
pub(crate) mod provider {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        inline: "
            package weft:host-bindings;
            world provider-exports {
                import weft:plugin/appservice@0.1.3;
                export weft:plugin/tokens@0.1.3;
                export weft:plugin/credentials@0.1.3;
                export weft:plugin/http-handler@0.1.3;
            }
        ",
        world: "weft:host-bindings/provider-exports",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "weft:plugin/types": super::connector::weft::plugin::types,
            "weft:plugin/http": super::connector::weft::plugin::http,
        },
    });
}

pub(crate) use connector::exports::weft::plugin::backfill;
pub(crate) use connector::exports::weft::plugin::login_flow;
pub(crate) use connector::exports::weft::plugin::media_handler;
pub(crate) use connector::exports::weft::plugin::network_api;
pub(crate) use connector::exports::weft::plugin::provider_login;
pub(crate) use connector::exports::weft::plugin::receipt_handler;
pub(crate) use connector::weft::plugin as imports;
pub(crate) use provider::exports::weft::plugin::credentials;
pub(crate) use provider::exports::weft::plugin::http_handler;
pub(crate) use provider::exports::weft::plugin::tokens as token_exports;
pub(crate) use provider::weft::plugin::appservice;
