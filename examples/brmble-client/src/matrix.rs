//! Using the Matrix credentials: check whose they are, join the rooms of
//! the server's channels, and post to one. The access token travels only
//! in the `Authorization` header: query-string tokens end up in proxy
//! logs, and homeservers behind MAS reject them.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::api::MatrixCredentials;
use crate::http::{self, RequestError};

/// Everything but RFC 3986's unreserved characters, so `!room:server`
/// and `$event` stay one path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why [`join_and_say`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// A call to the homeserver failed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The token belongs to someone other than the credentials say.
    #[error("the access token is {actual}'s, not {expected}'s")]
    WrongUser {
        /// The user the credentials name.
        expected: String,
        /// The user the homeserver says the token is for.
        actual: String,
    },
    /// The room map has no room for the channel.
    #[error("channel {channel_id} has no Matrix room (the room map has channels {known:?})")]
    UnknownChannel {
        /// The channel asked for.
        channel_id: String,
        /// The channels the room map has.
        known: Vec<String>,
    },
}

#[derive(Deserialize)]
struct WhoAmI {
    user_id: String,
}

#[derive(Deserialize)]
struct Sent {
    event_id: String,
}

/// Checks that `credentials` are the user's (`whoami`), joins every room
/// of the room map, and sends `text` as an `m.text` message to the room of
/// `channel_id`. Returns the new event's id.
pub async fn join_and_say(
    credentials: &MatrixCredentials,
    channel_id: &str,
    text: &str,
) -> Result<String, MatrixError> {
    // Before any call, so a typo has no side effects.
    let Some(room_id) = credentials.room_map.get(channel_id) else {
        return Err(MatrixError::UnknownChannel {
            channel_id: channel_id.to_owned(),
            known: credentials.room_map.keys().cloned().collect(),
        });
    };
    let client = http::client()?;
    let homeserver = credentials.homeserver_url.as_str();
    let authorized =
        |request: reqwest::RequestBuilder| request.bearer_auth(&credentials.access_token);

    let url = http::endpoint(homeserver, "/_matrix/client/v3/account/whoami")?;
    let whoami: WhoAmI = http::send_json(authorized(client.get(url))).await?;
    if whoami.user_id != credentials.user_id {
        return Err(MatrixError::WrongUser {
            expected: credentials.user_id.clone(),
            actual: whoami.user_id,
        });
    }

    // Several channels may share a room; joining once is enough.
    let rooms: BTreeSet<&String> = credentials.room_map.values().collect();
    for room in rooms {
        let url = http::endpoint(
            homeserver,
            &format!("/_matrix/client/v3/join/{}", segment(room)),
        )?;
        let _: serde_json::Value =
            http::send_json(authorized(client.post(url)).json(&serde_json::json!({}))).await?;
    }

    let url = http::endpoint(
        homeserver,
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            segment(room_id),
            segment(&transaction_id())
        ),
    )?;
    let body = serde_json::json!({ "msgtype": "m.text", "body": text });
    let sent: Sent = http::send_json(authorized(client.put(url)).json(&body)).await?;
    Ok(sent.event_id)
}

fn segment(text: &str) -> String {
    utf8_percent_encode(text, PATH_SEGMENT).to_string()
}

/// A transaction id unique to this send: the homeserver deduplicates
/// retries by it, so it must never repeat for a different message.
fn transaction_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("brmble-{millis}-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests;
