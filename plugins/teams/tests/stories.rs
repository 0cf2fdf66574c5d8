//! The Teams connector's own tests, on the weft-testing harness: the
//! component built from this crate, Teams answering from canned responses
//! in the documented wire formats (`teams-consumer-api.md`), and a manual
//! clock for the sync timers. The end-to-end tests against the fake Teams
//! service and a real Synapse are in `tests/it/teams.rs`.

use serde_json::{Value, json};
use weft_testing::{ChatKind, Harness, RecordedRequest, RemoteEvent, Reply, StateKind, TestLogin};

const AUTH: &str = "https://teams.test/api/auth";
const CHAT: &str = "https://msgapi.teams.test";
const ME: &str = "8:live:alice";
const BOB: &str = "8:live:bob";
const DM: &str = "19:alice_bob@unq.gbl.spaces";

async fn teams() -> Harness {
    Harness::builder(weft_testing::plugin!())
        .setting("auth-url", AUTH)
        .setting("chat-service-url", CHAT)
        .grant_http("https://teams.test")
        .grant_http(CHAT)
        // Pictures and files: the media service, as `media-url` has it
        // by default.
        .grant_http("https://*.asm.skype.com")
        .start()
        .await
        .expect("the Teams connector loads")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A login's metadata as a finished MSAL login leaves it: an access token
/// good for an hour, no skypetoken yet.
fn alice() -> Value {
    json!({
        "mri": ME,
        "tokens": {
            "access_token": "mbi-access",
            "expires_at": now_secs() + 3600,
            "refresh_token": "dc:refresh",
            "scopes": ["service::api.fl.spaces.skype.com::MBI_SSL"],
            "account_id": "alice-home",
        },
        "tokens_at": now_secs(),
        "chat_service": CHAT,
    })
}

/// The skypetoken exchange (§3), answering with a token good for a day.
fn skypetoken_exchange(harness: &Harness, token: &str) {
    harness.http().on(
        "POST",
        &format!("{AUTH}/v1.0/authz/consumer"),
        Reply::json(
            200,
            json!({
                "skypeToken": {
                    "skypetoken": token,
                    "expiresIn": 86_400,
                    "skypeid": "live:alice",
                    "signinname": "alice@outlook.test",
                    "isBusinessTenant": false,
                },
                "regionGtms": { "chatService": CHAT },
            }),
        ),
    );
}

fn message(id: u64, from: &str, name: &str, content: &str) -> Value {
    json!({
        "id": id.to_string(),
        "sequenceId": id - 1_700_000_000_000 + 1,
        "clientmessageid": format!("{id}1"),
        "version": id.to_string(),
        "conversationid": DM,
        "type": "Message",
        "messagetype": "RichText/Html",
        "contenttype": "text",
        "content": content,
        "from": format!("{CHAT}/v1/users/ME/contacts/{from}"),
        "imdisplayname": name,
        "composetime": "2023-11-14T22:13:20.000Z",
        "originalarrivaltime": "2023-11-14T22:13:20.000Z",
        "properties": {},
    })
}

/// One DM with Bob, whose last message is `last`, and its messages.
fn a_dm_with_bob(harness: &Harness, messages: Vec<Value>) {
    a_dm_with_bob_read_up_to(harness, messages, None);
}

/// The same, with Alice's own read marker (`consumptionhorizon`) at
/// message `read`.
fn a_dm_with_bob_read_up_to(harness: &Harness, messages: Vec<Value>, read: Option<u64>) {
    let last = messages.last().cloned().unwrap_or_else(|| json!({}));
    let mut properties = json!({ "isemptyconversation": "false" });
    if let Some(read) = read {
        properties["consumptionhorizon"] = json!(format!("{read};{read};{read}"));
    }
    harness.http().on(
        "GET",
        &format!("{CHAT}/v1/users/ME/conversations"),
        Reply::json(
            200,
            json!({
                "conversations": [{
                    "id": DM,
                    "type": "Conversation",
                    "version": 1,
                    "properties": properties,
                    "lastMessage": last,
                    "threadProperties": {
                        "threadType": "chat",
                        "productThreadType": "OneToOneChat",
                        "membercount": "2",
                    },
                }],
                "_metadata": { "syncState": "" },
            }),
        ),
    );
    harness.http().on(
        "GET",
        &format!("{CHAT}/v1/threads/{}", encoded(DM)),
        Reply::json(
            200,
            json!({
                "id": DM,
                "type": "Thread",
                "properties": { "threadType": "chat", "productThreadType": "OneToOneChat" },
                "members": [
                    { "id": ME, "role": "Admin", "friendlyName": "Alice" },
                    { "id": BOB, "role": "Admin", "friendlyName": "Bob" },
                ],
            }),
        ),
    );
    let mut newest_first = messages;
    newest_first.reverse();
    harness.http().on(
        "GET",
        &format!("{CHAT}/v1/users/ME/conversations/{}/messages", encoded(DM)),
        Reply::json(200, json!({ "messages": newest_first, "_metadata": {} })),
    );
}

fn skypetoken_of(request: &RecordedRequest) -> Option<&str> {
    request.header("authentication")
}

#[tokio::test]
async fn connecting_trades_the_microsoft_token_for_a_skypetoken_and_announces_the_dm() {
    let harness = teams().await;
    skypetoken_exchange(&harness, "skype-1");
    a_dm_with_bob(&harness, vec![]);
    let login = harness.login(ME, alice()).await.unwrap();

    login.fire("connect").await.unwrap();

    let unanswered = harness.http().unanswered();
    assert!(unanswered.is_empty(), "{unanswered:#?}");
    let exchange = &harness.http().requests_to(AUTH)[0];
    assert_eq!(exchange.header("authorization"), Some("Bearer mbi-access"));
    let chats = login.chats();
    assert_eq!(chats.len(), 1, "{chats:?}");
    assert_eq!(chats[0].chat_id, DM);
    assert_eq!(chats[0].kind, ChatKind::Direct);
    assert!(chats[0].members.iter().any(|m| m.user.id == BOB));
    for request in harness.http().requests_to(CHAT) {
        assert_eq!(
            skypetoken_of(&request),
            Some("skypetoken=skype-1"),
            "{}",
            request.url
        );
    }
    assert_eq!(login.metadata()["skypetoken"], "skype-1");
    assert_eq!(
        login.states().last().map(|s| s.state),
        Some(StateKind::Connected)
    );
}

/// A thread id as it appears in a URL path.
fn encoded(id: &str) -> String {
    id.replace(':', "%3A").replace('@', "%40")
}

const T0: u64 = 1_700_000_000_000;

#[tokio::test]
async fn a_new_message_is_bridged_once_with_its_sender_and_html_and_older_ones_are_history() {
    let harness = teams().await;
    skypetoken_exchange(&harness, "skype-1");
    let hello = message(T0, BOB, "Bob", "<p>hello</p>");
    a_dm_with_bob(&harness, vec![hello.clone()]);
    let login = harness.login(ME, alice()).await.unwrap();
    login.fire("connect").await.unwrap();
    // What was there before the login is the new portal's history.
    assert!(login.messages().is_empty(), "{:?}", login.messages());

    let news = message(T0 + 1000, BOB, "Bob", "<p>lunch at <b>noon</b>?</p>");
    a_dm_with_bob(&harness, vec![hello, news]);
    login.fire("poll").await.unwrap();
    login.fire("poll").await.unwrap();

    let messages = login.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let bridged = &messages[0];
    assert_eq!(bridged.chat_id, DM);
    assert_eq!(bridged.message_id, (T0 + 1000).to_string());
    assert_eq!(bridged.sender.user.id, BOB);
    assert!(!bridged.sender.is_from_me);
    assert_eq!(bridged.text, "lunch at noon?");
    assert!(
        bridged
            .html
            .as_deref()
            .is_some_and(|h| h.contains("<b>noon</b>")),
        "{bridged:?}"
    );
}

#[tokio::test]
async fn a_rejected_skypetoken_is_exchanged_again_once_and_the_call_retried() {
    let harness = teams().await;
    skypetoken_exchange(&harness, "skype-1");
    a_dm_with_bob(&harness, vec![]);
    let login = harness.login(ME, alice()).await.unwrap();
    login.fire("connect").await.unwrap();

    // Teams forgets the skypetoken: the next listing is refused once.
    skypetoken_exchange(&harness, "skype-2");
    harness.http().once(
        "GET",
        &format!("{CHAT}/v1/users/ME/conversations"),
        Reply::json(401, json!({ "message": "Authentication failed" })),
    );
    harness.http().clear_requests();
    login.fire("discover").await.unwrap();

    assert_eq!(harness.http().requests_to(AUTH).len(), 1);
    let listings = harness
        .http()
        .requests_to(&format!("{CHAT}/v1/users/ME/conversations"));
    let tokens: Vec<_> = listings.iter().map(|r| skypetoken_of(r).unwrap()).collect();
    assert_eq!(tokens, ["skypetoken=skype-1", "skypetoken=skype-2"]);
    assert_eq!(login.metadata()["skypetoken"], "skype-2");
    assert_eq!(
        login.states().last().map(|s| s.state),
        Some(StateKind::Connected)
    );
}

#[tokio::test]
async fn rate_limited_by_teams_the_login_waits_as_long_as_retry_after_says() {
    let harness = teams().await;
    skypetoken_exchange(&harness, "skype-1");
    a_dm_with_bob(&harness, vec![]);
    harness.http().once(
        "GET",
        &format!("{CHAT}/v1/users/ME/conversations"),
        Reply::status(429).header("retry-after", "120"),
    );
    let login = harness.login(ME, alice()).await.unwrap();

    login.fire("connect").await.ok();
    let state = login.states().pop().unwrap();
    assert_eq!(state.state, StateKind::TransientDisconnect);
    assert_eq!(state.error_code.as_deref(), Some("teams-rate-limited"));

    // The next syncs, within the two minutes, leave Teams alone.
    harness.http().clear_requests();
    login.fire("poll").await.ok();
    login.fire("discover").await.ok();
    assert_eq!(harness.http().requests(), []);
}

/// Alice's login, connected, after Bob sent `name`, a picture whose
/// media-service object is `object` (a `RichText/UriObject` message).
async fn a_picture_from_bob(harness: &Harness, object: &str, name: &str) -> TestLogin {
    skypetoken_exchange(harness, "skype-1");
    let hello = message(T0, BOB, "Bob", "<p>hello</p>");
    a_dm_with_bob(harness, vec![hello.clone()]);
    let login = harness.login(ME, alice()).await.unwrap();
    login.fire("connect").await.unwrap();

    let mut picture = message(
        T0 + 1000,
        BOB,
        "Bob",
        &format!(
            "<URIObject type=\"Picture.1\" uri=\"{object}\">To view this shared photo, go to: \
             <a href=\"https://login.skype.com/login/sso?go=xmmfallback?pic=0-wus-d1-cat\">\
             link</a><OriginalName v=\"{name}\"></OriginalName><FileSize v=\"4\"></FileSize>\
             </URIObject>"
        ),
    );
    picture["messagetype"] = json!("RichText/UriObject");
    a_dm_with_bob(harness, vec![hello, picture]);
    login.fire("poll").await.unwrap();
    login
}

#[tokio::test]
async fn a_picture_in_skypes_media_service_is_fetched_with_the_skypetoken_under_the_default_grant()
{
    let harness = teams().await;
    let object = "https://us-api.asm.skype.com/v1/objects/0-wus-d1-cat";
    let login = a_picture_from_bob(&harness, object, "cat.png").await;

    let media = login.media();
    assert_eq!(media.len(), 1, "{:?}", login.events());
    assert_eq!(media[0].attachment.file_name, "cat.png");
    assert_eq!(media[0].attachment.mime_type, "image/png");
    let view = format!("{object}/views/imgpsh_fullsize");
    let png = b"\x89PNG\r\n\x1a\n".to_vec();
    harness.http().on(
        "GET",
        &view,
        Reply::status(200)
            .header("content-type", "image/png")
            .body(png.clone()),
    );
    let bytes = harness
        .fetch(&media[0])
        .await
        .expect("the media service is granted");
    assert_eq!(bytes, png);
    let fetched = &harness.http().requests_to(&view)[0];
    assert_eq!(skypetoken_of(fetched), Some("skypetoken=skype-1"));
}

#[tokio::test]
async fn a_picture_on_a_host_that_only_looks_like_the_media_service_becomes_a_note_and_is_never_fetched()
 {
    let harness = teams().await;
    // A name that merely ends like the media service's.
    let object = "https://us-api.asm.skype.com.evil.test/v1/objects/0-x";
    let login = a_picture_from_bob(&harness, object, "x.png").await;

    // The host refuses to queue a file it may not fetch; the chat gets a
    // note instead, and the poll goes on.
    assert_eq!(login.media(), [], "{:?}", login.events());
    let notes = login.messages();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].text.starts_with("📎 x.png (not bridged: ")
            && notes[0].text.contains("is not granted to plugin teams"),
        "{}",
        notes[0].text
    );
    assert_eq!(
        harness
            .http()
            .requests_to("https://us-api.asm.skype.com.evil.test"),
        []
    );
}

#[tokio::test]
async fn bob_reading_what_alice_sent_and_alice_reading_on_her_phone_come_back_as_read_receipts() {
    let harness = teams().await;
    skypetoken_exchange(&harness, "skype-1");
    let hello = message(T0, BOB, "Bob", "<p>hello</p>");
    a_dm_with_bob_read_up_to(&harness, vec![hello.clone()], Some(T0));
    let login = harness.login(ME, alice()).await.unwrap();
    login.fire("connect").await.unwrap();

    // Alice answers from Matrix; Teams gives the message its id.
    let sent = T0 + 2000;
    harness.http().on(
        "POST",
        &format!("{CHAT}/v1/users/ME/conversations/{}/messages", encoded(DM)),
        Reply::json(201, json!({ "OriginalArrivalTime": sent })),
    );
    assert_eq!(
        login.send_text(DM, "see you at noon").await.unwrap(),
        sent.to_string()
    );
    // Bob reads it.
    let horizons = format!("{CHAT}/v1/threads/{}/consumptionhorizons", encoded(DM));
    harness.http().on(
        "GET",
        &horizons,
        Reply::json(
            200,
            json!({ "consumptionhorizons": [
                { "id": ME, "consumptionhorizon": format!("{sent};{sent};{sent}") },
                { "id": BOB, "consumptionhorizon": format!("{sent};{};0", sent + 500) },
            ]}),
        ),
    );
    login.fire("poll").await.unwrap();

    let receipts = |login: &TestLogin| -> Vec<(String, bool, String)> {
        login
            .events()
            .into_iter()
            .filter_map(|event| match event {
                RemoteEvent::ReadReceipt(r) => {
                    Some((r.sender.user.id, r.sender.is_from_me, r.up_to))
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        receipts(&login),
        [(BOB.to_owned(), false, sent.to_string())]
    );
    // Everyone has read it: the chat is no longer watched for reads.
    let index: Value = serde_json::from_slice(&login.kv()["chats"]).unwrap();
    assert!(index[DM].get("reads_until_ms").is_none(), "{index}");
    assert_eq!(harness.http().requests_to(&horizons).len(), 1);

    // Alice reads Bob's answer on her phone: her own marker moves.
    let answer = message(T0 + 3000, BOB, "Bob", "<p>noon it is</p>");
    a_dm_with_bob_read_up_to(&harness, vec![hello, answer], Some(T0 + 3000));
    login.fire("poll").await.unwrap();
    assert_eq!(
        receipts(&login).last(),
        Some(&(ME.to_owned(), true, (T0 + 3000).to_string()))
    );
    assert_eq!(
        login.messages().last().map(|m| m.text.as_str()),
        Some("noon it is")
    );
}

#[tokio::test]
async fn a_message_from_matrix_carries_the_name_teams_shows_on_the_accounts_own_messages() {
    let harness = teams().await;
    skypetoken_exchange(&harness, "skype-1");
    let hello = message(T0, BOB, "Bob", "<p>hello</p>");
    a_dm_with_bob(&harness, vec![hello.clone()]);
    let login = harness.login(ME, alice()).await.unwrap();
    login.fire("connect").await.unwrap();
    let send = format!("{CHAT}/v1/users/ME/conversations/{}/messages", encoded(DM));
    harness.http().on(
        "POST",
        &send,
        Reply::json(201, json!({ "OriginalArrivalTime": T0 + 5000 })),
    );
    let sent_names = || -> Vec<Value> {
        harness
            .http()
            .requests_to(&send)
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.json()["imdisplayname"].clone())
            .collect()
    };

    // Before Teams has shown one of Alice's own messages, a send names her
    // as the login does (here, the harness names a login by its id).
    login.send_text(DM, "first").await.unwrap();
    assert_eq!(sent_names(), [json!(ME)]);

    // Alice writes from her phone; Teams shows her name on it, and sends
    // from Matrix carry that name from then on.
    let mine = message(T0 + 1000, ME, "Alice Example", "<p>on my way</p>");
    a_dm_with_bob(&harness, vec![hello.clone(), mine.clone()]);
    login.fire("poll").await.unwrap();
    login.send_text(DM, "second").await.unwrap();
    assert_eq!(sent_names(), [json!(ME), json!("Alice Example")]);

    // A later message of hers that shows the login's own name (an earlier
    // send from Matrix) teaches nothing: the name stays.
    let echo = message(T0 + 2000, ME, ME, "<p>first</p>");
    a_dm_with_bob(&harness, vec![hello, mine, echo]);
    login.fire("poll").await.unwrap();
    login.send_text(DM, "third").await.unwrap();
    assert_eq!(
        sent_names(),
        [json!(ME), json!("Alice Example"), json!("Alice Example")]
    );
}
