//! Talking to Teams: the chat service's URLs and headers (reference
//! §4.1–4.4), how answers are sorted into [`TeamsError`]s, request bodies,
//! and the time budget every host call of one sync shares.

use std::time::Duration;

use serde_json::{Value, json};
use weft_sdk::http::{HttpError, Method, Request, Response};

use crate::ids;
use crate::timefmt;

/// A `Retry-After` that cannot be read is taken as this.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A `Retry-After` longer than this is cut to it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a call to Teams failed. Callers branch on it: a 401 gets one
/// skypetoken renewal, a 429 pauses, a failing chat backs off alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TeamsError {
    /// Teams refused the skypetoken (401).
    #[error("Teams refused the login's token")]
    Unauthorized,
    /// The login's tokens are gone for good: the user must log in again.
    #[error("log in to Teams again: {0}")]
    Relogin(String),
    /// Rate-limited (429): wait this long.
    #[error("Teams is rate-limiting this account; retry in {}s", .0.as_secs())]
    RateLimited(Duration),
    /// Another error status.
    #[error("Teams answered HTTP {status}: {detail}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the answer, for logs.
        detail: String,
    },
    /// No answer: a timeout, or the connection failed.
    #[error("Teams did not answer: {0}")]
    Network(String),
    /// The host refused the request (the URL is not granted).
    #[error("request not allowed: {0}")]
    Denied(String),
    /// This sync's time is up; the rest waits for the next one.
    #[error("out of time for this sync")]
    OutOfTime,
    /// An answer that makes no sense.
    #[error("unexpected answer from Teams: {0}")]
    Malformed(String),
    /// The token provider failed for now.
    #[error("the token provider failed: {0}")]
    Provider(String),
    /// The host's storage or event queue failed.
    #[error("{0}")]
    Host(String),
}

impl TeamsError {
    /// Whether trying again later may help (and a send may be retried at
    /// once with the same `clientmessageid`).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited(_)
            | Self::Network(_)
            | Self::OutOfTime
            | Self::Provider(_)
            | Self::Host(_) => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

impl From<TeamsError> for weft_sdk::Error {
    fn from(error: TeamsError) -> Self {
        let message = error.to_string();
        match error {
            TeamsError::Unauthorized | TeamsError::Relogin(_) => Self::BadCredentials(message),
            ref e if e.is_transient() => Self::Transient(message),
            _ => Self::Internal(message),
        }
    }
}

impl From<weft_sdk::kv::KvError> for TeamsError {
    fn from(error: weft_sdk::kv::KvError) -> Self {
        Self::Host(format!("kv: {error}"))
    }
}

impl From<weft_sdk::events::EventError> for TeamsError {
    fn from(error: weft_sdk::events::EventError) -> Self {
        Self::Host(error.to_string())
    }
}

impl From<weft_sdk::Error> for TeamsError {
    fn from(error: weft_sdk::Error) -> Self {
        match error {
            weft_sdk::Error::BadCredentials(m) => Self::Relogin(m),
            other => Self::Host(other.to_string()),
        }
    }
}

/// How long to wait after a 429, from its `Retry-After` (seconds or an
/// HTTP date), within sane bounds.
pub(crate) fn retry_after(value: Option<&str>, now_ms: u64) -> Duration {
    value
        .and_then(|v| timefmt::parse_retry_after(v, now_ms))
        .unwrap_or(DEFAULT_RETRY_AFTER)
        .min(MAX_RETRY_AFTER)
}

/// Sorts an answer: 2xx is the response; the rest an error.
pub(crate) fn classify(
    status: u16,
    retry_after_header: Option<&str>,
    body: &[u8],
    now_ms: u64,
) -> Result<(), TeamsError> {
    match status {
        200..=299 => Ok(()),
        401 => Err(TeamsError::Unauthorized),
        429 => Err(TeamsError::RateLimited(retry_after(
            retry_after_header,
            now_ms,
        ))),
        status => {
            let mut detail: String = String::from_utf8_lossy(body).chars().take(200).collect();
            if detail.trim().is_empty() {
                detail = "(no body)".into();
            }
            Err(TeamsError::Status { status, detail })
        }
    }
}

/// How long a chat that failed `failures` times in a row waits before it
/// is polled again: a 429's `Retry-After`; 30 s after another client
/// error; else exponentially from 2 s up to a minute.
pub(crate) fn backoff(failures: u32, error: &TeamsError) -> Duration {
    match error {
        TeamsError::RateLimited(wait) => (*wait).max(Duration::from_secs(1)),
        TeamsError::Status { status, .. } if (400..500).contains(status) => Duration::from_secs(30),
        _ => {
            let exponent = failures.saturating_sub(1).min(5);
            Duration::from_secs((2u64 << exponent).min(60))
        }
    }
}

// ---------------------------------------------------------------------
// URLs (§4.2–4.4)

/// The conversation list's first page.
pub(crate) fn conversations_url(base: &str) -> String {
    format!(
        "{base}/v1/users/ME/conversations?startTime=0&pageSize=100&view=msnp24Equivalent&targetType=Passport%7CSkype%7CLync%7CThread%7CPSTN%7CAgent"
    )
}

/// A thread, with its members.
pub(crate) fn thread_url(base: &str, thread_id: &str) -> String {
    format!(
        "{base}/v1/threads/{}?view=msnp24Equivalent",
        ids::encode(thread_id)
    )
}

/// A conversation's messages (`…/messages`), the base of the send, edit
/// and delete URLs.
pub(crate) fn messages_url(base: &str, conversation_id: &str) -> String {
    format!(
        "{base}/v1/users/ME/conversations/{}/messages",
        ids::encode(conversation_id)
    )
}

/// A page of a conversation's messages since `start_ms`, newest first.
pub(crate) fn messages_since_url(
    base: &str,
    conversation_id: &str,
    start_ms: u64,
    page_size: u32,
) -> String {
    format!(
        "{}?startTime={start_ms}&pageSize={page_size}&view=msnp24Equivalent&targetType=Passport%7CSkype%7CLync%7CThread%7CPSTN%7CAgent",
        messages_url(base, conversation_id)
    )
}

/// One message (edit, delete).
pub(crate) fn message_url(base: &str, conversation_id: &str, message_id: &str) -> String {
    format!(
        "{}/{}",
        messages_url(base, conversation_id),
        ids::encode(message_id)
    )
}

/// A message's reactions.
pub(crate) fn emotions_url(base: &str, conversation_id: &str, message_id: &str) -> String {
    format!(
        "{}/properties?name=emotions",
        message_url(base, conversation_id, message_id)
    )
}

/// A conversation's read marker.
pub(crate) fn consumption_horizon_url(base: &str, conversation_id: &str) -> String {
    format!(
        "{base}/v1/users/ME/conversations/{}/properties?name=consumptionhorizon",
        ids::encode(conversation_id)
    )
}

/// Every member's read marker in a thread (field reports).
pub(crate) fn consumption_horizons_url(base: &str, thread_id: &str) -> String {
    format!(
        "{base}/v1/threads/{}/consumptionhorizons",
        ids::encode(thread_id)
    )
}

/// The skypetoken exchange.
pub(crate) fn authz_url(auth_base: &str) -> String {
    format!("{}/v1.0/authz/consumer", auth_base.trim_end_matches('/'))
}

// ---------------------------------------------------------------------
// Bodies (§4.4)

/// A message sent from Matrix: `content` is HTML.
pub(crate) fn send_body(
    client_message_id: &str,
    content: &str,
    display_name: Option<&str>,
) -> Value {
    let mut body = json!({
        "clientmessageid": client_message_id,
        "content": content,
        "messagetype": "RichText/Html",
        "contenttype": "text",
    });
    if let Some(name) = display_name.filter(|n| !n.trim().is_empty()) {
        body["imdisplayname"] = Value::from(name);
    }
    body
}

/// An edit of a message.
pub(crate) fn edit_body(content: &str) -> Value {
    json!({ "content": content, "messagetype": "RichText/Html", "contenttype": "text" })
}

/// Typing, or no longer typing.
pub(crate) fn typing_body(typing: bool) -> Value {
    json!({
        "content": "",
        "messagetype": if typing { "Control/Typing" } else { "Control/ClearTyping" },
        "contenttype": "Application/Message",
    })
}

/// Adds a reaction.
pub(crate) fn add_reaction_body(key: &str, now_ms: u64) -> Value {
    json!({ "emotions": { "key": key, "value": now_ms } })
}

/// Removes a reaction.
pub(crate) fn remove_reaction_body(key: &str) -> Value {
    json!({ "emotions": { "key": key } })
}

/// The read marker at message `message_id`.
pub(crate) fn consumption_horizon_body(message_id: &str, now_ms: u64) -> Value {
    // `<message id>;<time>;<client message id>`; ids are arrival times.
    let time = message_id.parse::<u64>().unwrap_or(now_ms);
    json!({ "consumptionhorizon": format!("{message_id};{time};{message_id}") })
}

/// The next `clientmessageid` for a login: a 19-digit number (nanoseconds
/// since 1970, as the web client's), strictly greater than the last one.
pub(crate) fn next_client_message_id(last: u64, now_ms: u64, jitter: u64) -> u64 {
    let from_clock = now_ms
        .saturating_mul(1_000_000)
        .saturating_add(jitter % 1_000_000);
    from_clock.max(last.saturating_add(1))
}

// ---------------------------------------------------------------------
// The host calls

/// The time one sync may spend on host calls: the host kills a call that
/// runs past its deadline, so every request's timeout is cut to what is
/// left, and no request starts without enough time for an answer.
pub(crate) struct Budget {
    deadline_ns: u64,
}

/// Less than this left: no new request.
const MIN_REQUEST_MS: u64 = 1000;
/// Kept back from every request's timeout, for the work after it.
const RESERVE_MS: u64 = 400;
/// The longest a request may take.
const MAX_REQUEST_MS: u64 = 15_000;

impl Budget {
    /// A budget of `ms` from now.
    pub(crate) fn new(ms: u64) -> Self {
        Self {
            deadline_ns: weft_sdk::time::monotonic_ns()
                .saturating_add(ms.saturating_mul(1_000_000)),
        }
    }

    /// Milliseconds left.
    pub(crate) fn remaining_ms(&self) -> u64 {
        self.deadline_ns
            .saturating_sub(weft_sdk::time::monotonic_ns())
            / 1_000_000
    }

    /// The timeout for the next request, or [`TeamsError::OutOfTime`].
    fn request_timeout(&self) -> Result<Duration, TeamsError> {
        let left = self.remaining_ms();
        if left < MIN_REQUEST_MS {
            return Err(TeamsError::OutOfTime);
        }
        Ok(Duration::from_millis(
            left.saturating_sub(RESERVE_MS).min(MAX_REQUEST_MS),
        ))
    }

    /// Waits `wait` if the budget allows it with a request after; returns
    /// whether it waited.
    pub(crate) fn wait(&self, wait: Duration) -> bool {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        if wait_ms.saturating_add(MIN_REQUEST_MS + RESERVE_MS) > self.remaining_ms() {
            return false;
        }
        if wait_ms > 0 {
            // The SDK has no sleep; WASI's monotonic clock has (the host
            // links all of WASI p2's clocks).
            let nanos = wait_ms.saturating_mul(1_000_000);
            weft_sdk::wit::imports::wasi::clocks::monotonic_clock::subscribe_duration(nanos)
                .block();
        }
        true
    }
}

/// The headers of every chat-service call (the ones purple-teams sends
/// that matter: without `ms-ic3-product`, old groups answer 404).
pub(crate) fn chat_headers(skypetoken: &str) -> [(&'static str, String); 5] {
    [
        ("authentication", format!("skypetoken={skypetoken}")),
        ("ms-ic3-product", "tfl".into()),
        ("ms-ic3-additional-product", "Sfl".into()),
        ("x-ms-client-consumer-type", "teams4life".into()),
        ("accept", "application/json; ver=1.0".into()),
    ]
}

/// Sends `request` within `budget` and sorts the answer.
pub(crate) fn send(request: Request, budget: &Budget) -> Result<Response, TeamsError> {
    let request = request.timeout(budget.request_timeout()?);
    let response = request.send().map_err(|error| match error {
        HttpError::Timeout => TeamsError::Network("timed out".into()),
        HttpError::Connect(m) | HttpError::Protocol(m) => TeamsError::Network(m),
        HttpError::Denied(m) => TeamsError::Denied(m),
        HttpError::TooLarge(limit) => {
            TeamsError::Malformed(format!("answer larger than {limit} bytes"))
        }
        HttpError::InvalidRequest(m) => TeamsError::Malformed(m),
        HttpError::Status { status, body } => TeamsError::Status {
            status,
            detail: body,
        },
    })?;
    classify(
        response.status(),
        response.header("retry-after"),
        response.bytes(),
        weft_sdk::time::now_ms(),
    )?;
    Ok(response)
}

/// A chat-service request with its headers and, if any, a JSON body.
pub(crate) fn chat_request(
    method: Method,
    url: &str,
    skypetoken: &str,
    body: Option<&Value>,
) -> Request {
    let mut request = Request::new(method, url);
    for (name, value) in chat_headers(skypetoken) {
        request = request.header(name, value);
    }
    match body {
        Some(body) => request.json(body),
        None => request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_by_status() {
        let now = 784_111_777_000;
        assert_eq!(classify(201, None, b"", now), Ok(()));
        // 401 is the one that renews the skypetoken.
        assert_eq!(
            classify(401, None, b"{\"errorCode\":911}", now),
            Err(TeamsError::Unauthorized)
        );
        // 429 honours Retry-After as seconds or a date, else a minute.
        assert_eq!(
            classify(429, Some("7"), b"", now),
            Err(TeamsError::RateLimited(Duration::from_secs(7)))
        );
        assert_eq!(
            classify(429, Some("Sun, 06 Nov 1994 08:49:47 GMT"), b"", now),
            Err(TeamsError::RateLimited(Duration::from_secs(10)))
        );
        assert_eq!(
            classify(429, None, b"", now),
            Err(TeamsError::RateLimited(Duration::from_secs(60)))
        );
        // An absurd wait is capped.
        assert_eq!(
            classify(429, Some("999999"), b"", now),
            Err(TeamsError::RateLimited(Duration::from_secs(3600)))
        );
        // The rest keep their status and a short detail.
        let Err(TeamsError::Status { status, detail }) = classify(500, None, &[b'x'; 500], now)
        else {
            panic!("a 500 is a status error");
        };
        assert_eq!(status, 500);
        assert_eq!(detail.len(), 200);
    }

    #[test]
    fn errors_map_to_what_the_host_does() {
        use weft_sdk::Error;
        // Bad credentials pause the login until relogin.
        assert!(matches!(
            Error::from(TeamsError::Unauthorized),
            Error::BadCredentials(_)
        ));
        assert!(matches!(
            Error::from(TeamsError::Relogin("x".into())),
            Error::BadCredentials(_)
        ));
        // Rate limits, 5xx and timeouts are transient.
        assert!(matches!(
            Error::from(TeamsError::RateLimited(Duration::ZERO)),
            Error::Transient(_)
        ));
        assert!(matches!(
            Error::from(TeamsError::Status {
                status: 503,
                detail: String::new()
            }),
            Error::Transient(_)
        ));
        assert!(matches!(
            Error::from(TeamsError::Network("t".into())),
            Error::Transient(_)
        ));
        // Other client errors are not.
        assert!(matches!(
            Error::from(TeamsError::Status {
                status: 404,
                detail: String::new()
            }),
            Error::Internal(_)
        ));
    }

    #[test]
    fn a_failing_chat_backs_off_exponentially_up_to_a_minute() {
        let server = TeamsError::Status {
            status: 500,
            detail: String::new(),
        };
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, &server).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        // A 429 waits exactly its Retry-After.
        assert_eq!(
            backoff(1, &TeamsError::RateLimited(Duration::from_secs(42))),
            Duration::from_secs(42)
        );
        // Another 4xx waits 30 s.
        assert_eq!(
            backoff(
                1,
                &TeamsError::Status {
                    status: 404,
                    detail: String::new()
                }
            ),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_send_body_is_what_consumer_teams_takes() {
        let body = send_body("1715842512004000000", "<p>hi</p>", Some("Alice"));
        assert_eq!(
            body,
            json!({
                "clientmessageid": "1715842512004000000",
                "content": "<p>hi</p>",
                "messagetype": "RichText/Html",
                "contenttype": "text",
                "imdisplayname": "Alice",
            })
        );
        // No name, no field.
        assert!(send_body("1", "x", None).get("imdisplayname").is_none());
        assert_eq!(typing_body(true)["messagetype"], "Control/Typing");
        assert_eq!(typing_body(false)["messagetype"], "Control/ClearTyping");
        assert_eq!(
            add_reaction_body("like", 5),
            json!({"emotions": {"key": "like", "value": 5}})
        );
        assert_eq!(
            remove_reaction_body("like"),
            json!({"emotions": {"key": "like"}})
        );
        assert_eq!(
            consumption_horizon_body("1715842512004", 9),
            json!({"consumptionhorizon": "1715842512004;1715842512004;1715842512004"})
        );
    }

    #[test]
    fn client_message_ids_have_19_digits_and_only_grow() {
        let now_ms = 1_715_842_512_004;
        let first = next_client_message_id(0, now_ms, 123);
        assert_eq!(first.to_string().len(), 19);
        // The same millisecond, or a clock that went back, still grows.
        let second = next_client_message_id(first, now_ms, 0);
        assert!(second > first);
        let third = next_client_message_id(second, now_ms - 10_000, 999);
        assert_eq!(third, second + 1);
    }

    #[test]
    fn urls_encode_ids_and_match_the_reference_paths() {
        let base = "https://msgapi.teams.live.com";
        assert_eq!(
            messages_since_url(base, "19:a@thread.v2", 5, 50),
            "https://msgapi.teams.live.com/v1/users/ME/conversations/19%3Aa%40thread.v2/messages?startTime=5&pageSize=50&view=msnp24Equivalent&targetType=Passport%7CSkype%7CLync%7CThread%7CPSTN%7CAgent"
        );
        assert_eq!(
            emotions_url(base, "19:a@thread.v2", "17"),
            "https://msgapi.teams.live.com/v1/users/ME/conversations/19%3Aa%40thread.v2/messages/17/properties?name=emotions"
        );
        assert_eq!(
            consumption_horizon_url(base, "8:live:b"),
            "https://msgapi.teams.live.com/v1/users/ME/conversations/8%3Alive%3Ab/properties?name=consumptionhorizon"
        );
        assert_eq!(
            thread_url(base, "19:a@thread.v2"),
            "https://msgapi.teams.live.com/v1/threads/19%3Aa%40thread.v2?view=msnp24Equivalent"
        );
        assert_eq!(
            authz_url("https://teams.live.com/api/auth/"),
            "https://teams.live.com/api/auth/v1.0/authz/consumer"
        );
    }
}
