//! Generated bindings for the `weft:plugin` connector world.
//!
//! Internal to `weft-sdk`, which re-exports this crate as
//! `weft_sdk::wit::connector`. It is a crate of its own because
//! `wit-bindgen` exports a macro per exported interface at the crate root,
//! and both the connector and the login-provider worlds export
//! `login-flow`: generated in one crate, their macros would collide.
#![allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]

wit_bindgen::generate!({
    path: "../../wit/v0.1",
    world: "weft:plugin/connector@0.1.0",
    generate_all,
    pub_export_macro: true,
    export_macro_name: "export_connector",
    default_bindings_module: "weft_sdk::wit::connector",
});
