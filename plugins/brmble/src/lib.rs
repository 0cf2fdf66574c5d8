//! The Brmble credential provider.
//!
//! Brmble is a voice chat built on Mumble. Its clients connect to the
//! Mumble server with a client certificate and then ask this provider for
//! Matrix credentials, naming the certificate's SHA-1 hash:
//!
//! - `GET /server-info` (public): where the Mumble server and the
//!   homeserver are.
//! - `POST /auth/token` `{"certHash": "<40 hex>"}`: the user of that hash
//!   (created on first sight, with the next numeric id, registered as
//!   `@<id>:<server>` through the host's appservice), a working access
//!   token (checked with `/whoami`, renewed by logging in again when the
//!   homeserver no longer knows it), and a room per Mumble channel, which
//!   the user has joined.
//! - `PUT /admin/channels/<id>` `{"name": ...}` with the admin token: adds
//!   or renames a channel.
//!
//! The host serves one request at a time per plugin, so a first request
//! and its retry cannot create two users for one hash. Users, tokens and
//! rooms live in this plugin's KV ([`store`]). Tokens are never logged.
//!
//! The hash alone is not proof of possession: anyone who learns a user's
//! certificate hash can ask for that user's token. When the operator turns
//! client certificates on for these routes, the host passes the hash of
//! the certificate the client presented, and a body naming another hash
//! is refused (403).

mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_sdk::appservice::{self, AppserviceError};
use weft_sdk::http::Method;
use weft_sdk::routes::{Request, Response};
use weft_sdk::{CredentialProvider, Error, Result, config};

use crate::store::{User, is_cert_hash};

/// The provider; it keeps nothing between requests but what is in KV.
#[derive(Default)]
struct Brmble;

/// `POST /auth/token`'s body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    cert_hash: String,
}

/// `PUT /admin/channels/<id>`'s body.
#[derive(Deserialize)]
struct ChannelRequest {
    name: String,
}

/// The credentials a client gets.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Credentials {
    matrix: MatrixCredentials,
    livekit: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MatrixCredentials {
    homeserver_url: String,
    access_token: String,
    user_id: String,
    room_map: BTreeMap<String, String>,
}

impl CredentialProvider for Brmble {
    fn handle_request(&mut self, request: Request) -> Result<Response> {
        let route = (request.method, request.path.as_str());
        let outcome = match route {
            (Method::Get, "/server-info") => server_info(),
            (Method::Post, "/auth/token") => auth_token(&request),
            (Method::Put, path) if path.starts_with("/admin/channels/") => {
                put_channel(&request, &path["/admin/channels/".len()..])
            }
            (_, "/server-info" | "/auth/token") => {
                Ok(Response::error(405, "M_UNRECOGNIZED", "method not allowed"))
            }
            _ => Ok(Response::not_found()),
        };
        // Bad input is the client's to fix: a 400 that says what is wrong,
        // not a failure of the plugin.
        match outcome {
            Err(Error::InvalidInput(message)) => Ok(Response::error(400, "M_BAD_JSON", &message)),
            // The homeserver cannot issue tokens to appservice users (it
            // delegates its auth): the operator's to fix, and said so.
            Err(Error::Unsupported(message)) => Ok(Response::error(503, "M_UNAVAILABLE", &message)),
            other => other,
        }
    }
}

fn server_info() -> Result<Response> {
    let port: i64 = config::get("mumble-port")?.unwrap_or(64738);
    Ok(Response::json(
        200,
        &serde_json::json!({
            "mumbleHost": config::require::<String>("mumble-host")?,
            "mumblePort": port,
            "matrixHomeserverUrl": config::require::<String>("homeserver-url")?,
        }),
    ))
}

fn auth_token(request: &Request) -> Result<Response> {
    if !request.is_json() {
        return Err(Error::invalid_input(
            "send the body as JSON (Content-Type: application/json)",
        ));
    }
    let body: TokenRequest = request.json()?;
    let hash = body.cert_hash.to_ascii_lowercase();
    if !is_cert_hash(&hash) {
        return Err(Error::invalid_input(
            "certHash must be the certificate's SHA-1 fingerprint: 40 hex characters",
        ));
    }
    match &request.client_certificate_sha1 {
        Some(presented) if !presented.eq_ignore_ascii_case(&hash) => {
            return Ok(Response::error(
                403,
                "M_FORBIDDEN",
                "certHash is not the hash of the certificate this connection presented",
            ));
        }
        None if config::get::<bool>("require-client-certificate")?.unwrap_or(false) => {
            return Ok(Response::error(
                403,
                "M_FORBIDDEN",
                "present your client certificate on this connection",
            ));
        }
        _ => {}
    }

    let user = match store::user(&hash)? {
        Some(user) => user,
        None => {
            let limit = new_users_per_hour()?;
            if !store::may_create_user(&request.client_address, limit)? {
                return Ok(Response::error(
                    429,
                    "M_LIMIT_EXCEEDED",
                    "too many new users from this address; try again later",
                ));
            }
            let user = create_user(&hash)?;
            store::count_new_user(&request.client_address)?;
            user
        }
    };
    let user = with_working_token(user)?;
    let room_map = join_channels(&user)?;
    let server = appservice::server_name();
    let credentials = Credentials {
        matrix: MatrixCredentials {
            homeserver_url: config::require("homeserver-url")?,
            access_token: user.access_token.clone().unwrap_or_default(),
            user_id: format!("@{}:{server}", user.id),
            room_map,
        },
        livekit: None,
    };
    Ok(Response::json(200, &credentials))
}

fn new_users_per_hour() -> Result<u32> {
    let limit: i64 = config::get("new-users-per-hour")?.unwrap_or(20);
    Ok(u32::try_from(limit.max(0)).unwrap_or(u32::MAX))
}

/// How many ids taken by strangers one creation skips before giving up.
const MAX_SKIPS: usize = 16;

/// Creates the user of `hash`: reserves the next id first (so no other
/// hash can ever get it, even if this attempt dies half-way), registers
/// `@<id>`, and stores the user once the homeserver has it.
///
/// `M_USER_IN_USE` means the account exists. If an earlier attempt for
/// this same hash reserved that id, it registered the account and died
/// before storing it: log in. Otherwise the account is a stranger's (a
/// user from before this plugin claimed the namespace, or from a lost
/// KV): skip the id, never hand that account out.
fn create_user(hash: &str) -> Result<User> {
    let earlier = store::pending(hash)?;
    let mut id = match earlier {
        Some(id) => id,
        None => store::reserve_id(hash)?,
    };
    for _ in 0..MAX_SKIPS {
        let localpart = id.to_string();
        let token = match appservice::register_user(&localpart).map_err(failure)? {
            Some(token) => token,
            None if earlier == Some(id) => appservice::login_user(&localpart).map_err(failure)?,
            None => {
                weft_sdk::warn!(
                    "@{id} already exists on the homeserver and is not one this provider made; skipping it"
                );
                id = store::reserve_id(hash)?;
                continue;
            }
        };
        let user = User {
            id,
            cert_hash: hash.to_owned(),
            display_name: None,
            access_token: Some(token),
        };
        store::put_user(&user)?;
        store::clear_pending(hash)?;
        weft_sdk::info!("created Brmble user {id}");
        return Ok(user);
    }
    Err(Error::internal(format!(
        "{MAX_SKIPS} ids in a row were taken on the homeserver; check the provider's KV state"
    )))
}

/// `user` with a token the homeserver accepts for `@<id>`: the stored
/// one if `/whoami` says it is theirs, else a new login (stored).
fn with_working_token(mut user: User) -> Result<User> {
    let expected = format!("@{}:{}", user.id, appservice::server_name());
    if let Some(token) = &user.access_token {
        match appservice::whoami(token) {
            Ok(Some(owner)) if owner == expected => return Ok(user),
            Ok(_) | Err(AppserviceError::Denied(_)) => weft_sdk::info!(
                "user {}'s token is no longer valid; logging in again",
                user.id
            ),
            Err(error) => return Err(failure(error)),
        }
    }
    user.access_token = Some(appservice::login_user(&user.id.to_string()).map_err(failure)?);
    store::put_user(&user)?;
    Ok(user)
}

/// Makes sure every channel has its room and `user` is in each (joining
/// again is harmless, and a user who left is brought back); returns
/// channel id → room id.
fn join_channels(user: &User) -> Result<BTreeMap<String, String>> {
    let mut room_map = BTreeMap::new();
    for (channel, name) in store::channels()? {
        let room = match store::room(&channel)? {
            Some(room) => room,
            None => {
                let room =
                    appservice::create_room(&name, Some("A Brmble channel")).map_err(failure)?;
                store::put_room(&channel, &room)?;
                room
            }
        };
        appservice::join_room(&room, &user.id.to_string()).map_err(failure)?;
        room_map.insert(channel, room);
    }
    Ok(room_map)
}

fn put_channel(request: &Request, channel: &str) -> Result<Response> {
    let token: String = config::get("admin-token")?.unwrap_or_default();
    if token.len() < 16 {
        return Ok(Response::not_found());
    }
    let presented = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        return Ok(Response::error(
            401,
            "M_UNKNOWN_TOKEN",
            "this route needs the admin token",
        ));
    }
    if channel.is_empty()
        || channel.len() > 64
        || !channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid_input(
            "a channel id is 1 to 64 letters, digits, - or _",
        ));
    }
    let body: ChannelRequest = request.json()?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 255 {
        return Err(Error::invalid_input("a channel name is 1 to 255 bytes"));
    }
    store::put_channel(channel, name)?;
    Ok(Response::json(
        200,
        &serde_json::json!({ "channel": channel, "name": name }),
    ))
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How an appservice failure reaches the client: a retry later for an
/// unavailable homeserver, the host's explanation when the homeserver
/// cannot do it at all, a plain failure otherwise (logged by the host).
fn failure(error: AppserviceError) -> Error {
    match error {
        AppserviceError::Unavailable(m) => Error::transient(m),
        AppserviceError::Unsupported(m) => Error::Unsupported(m),
        other => Error::internal(other.to_string()),
    }
}

weft_sdk::register_credential_provider!(Brmble);
