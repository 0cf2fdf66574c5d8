//! The fake Teams over real HTTP: what a connector written from the
//! reference relies on.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::*;
use crate::identity::{
    MBI_SCOPE, SPACES_RESOURCE, TEAMS_DEVICE_CLIENT_ID, TEAMS_ORIGIN, TEAMS_SCOPES,
    TEAMS_WEB_CLIENT_ID,
};
use crate::msal_cache::{ENCRYPTION_COOKIE, MsalCache};

/// A form body (this reqwest has no `form` feature).
trait FormBody {
    fn form_pairs(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_pairs(self, pairs: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

/// reqwest is built without a TLS provider; install one before the first
/// client.
pub(crate) fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client logged in as one account, calling one chat-service base.
struct Client {
    http: reqwest::Client,
    chat: String,
    token: String,
}

/// Signs `account` in as the web app would: SPA tokens from the identity
/// fake, then the skypetoken exchange. Returns the exchange's answer.
async fn exchange(fake: &FakeTeams, access_token: &str) -> (u16, Value) {
    init_tls();
    let response = reqwest::Client::new()
        .post(fake.authz_url())
        .bearer_auth(access_token)
        .header("accept", "application/json; ver=1.0")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn login(fake: &FakeTeams, account: &TeamsAccount) -> Client {
    let tokens = fake.identity().issue_spa_tokens(&account.account);
    let (status, body) = exchange(fake, &tokens.access_token).await;
    assert_eq!(status, 200, "{body}");
    Client {
        http: reqwest::Client::new(),
        chat: body["regionGtms"]["chatService"]
            .as_str()
            .unwrap()
            .to_owned(),
        token: body["skypeToken"]["skypetoken"]
            .as_str()
            .unwrap()
            .to_owned(),
    }
}

impl Client {
    async fn call(&self, method: Method, url: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, body) = self.call_with_headers(method, url, body).await;
        (status, body)
    }

    async fn call_with_headers(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.chat)
        };
        let mut request = self
            .http
            .request(method, url)
            .header("authentication", format!("skypetoken={}", self.token));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, url: &str) -> (u16, Value) {
        self.call(Method::GET, url, None).await
    }

    async fn send(&self, chat: &str, clientmessageid: &str, text: &str) -> (u16, Value) {
        self.call(
            Method::POST,
            &format!("/v1/users/ME/conversations/{chat}/messages"),
            Some(json!({
                "clientmessageid": clientmessageid,
                "content": format!("<p>{text}</p>"),
                "messagetype": "RichText/Html",
                "contenttype": "text",
                "imdisplayname": "Me",
            })),
        )
        .await
    }

    async fn messages(&self, chat: &str, query: &str) -> Value {
        let (status, body) = self
            .get(&format!(
                "/v1/users/ME/conversations/{chat}/messages?{query}"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// The body of the page at `url`, one of the fake's HTML pages.
async fn page_text(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

fn id_of(message: &Value) -> String {
    match &message["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn two_friends(fake: &FakeTeams) -> (TeamsAccount, TeamsAccount, String) {
    let alice = fake.add_account("alice", "Alice Example");
    let bob = fake.add_account("bob", "Bob Example");
    let chat = fake.dm(&alice, &bob);
    (alice, bob, chat)
}

#[tokio::test]
async fn the_skypetoken_exchange_answers_the_documented_shape_pointing_back_here() {
    let fake = FakeTeams::start().await;
    let (alice, bob, _) = two_friends(&fake).await;
    fake.set_skypetoken_lifetime(600);
    let tokens = fake.identity().issue_spa_tokens(&alice.account);
    let (status, body) = exchange(&fake, &tokens.access_token).await;
    assert_eq!(status, 200, "{body}");
    // The outer `skypeToken`, the inner lowercase `skypetoken`, the id.
    let token = &body["skypeToken"];
    assert_eq!(token["skypeid"], alice.skype_id.as_str());
    assert_eq!(token["signinname"], "alice@outlook.com");
    assert_eq!(token["isBusinessTenant"], false);
    assert_eq!(token["expiresIn"], 600);
    assert_eq!(token["skypetoken"].as_str().unwrap().split('.').count(), 3);
    // Both chat-service bases are on this server.
    let gtms = &body["regionGtms"];
    assert_eq!(gtms["chatService"], fake.chat_service_url().as_str());
    assert_eq!(gtms["chatServiceAfd"], fake.chat_service_afd_url().as_str());
    // The next account gets `expiresIn` as a string, and a Skype name.
    let tokens = fake.identity().issue_spa_tokens(&bob.account);
    let (_, body) = exchange(&fake, &tokens.access_token).await;
    assert_eq!(body["skypeToken"]["expiresIn"], "600");
    assert_eq!(bob.skype_id, "live:bob");
    assert!(alice.skype_id.starts_with("live:.cid.") && alice.skype_id.len() == 26);
    // A token the platform never issued gets PT's 401.
    let (status, body) = exchange(&fake, "EwAnope").await;
    assert_eq!(status, 401);
    assert_eq!(body["status"]["code"], 40120);
}

#[tokio::test]
async fn a_device_code_token_is_refused_until_refreshed_for_mbi_ssl() {
    let fake = FakeTeams::start().await;
    let (alice, _, _) = two_friends(&fake).await;
    let device = fake.identity().issue_device_tokens(&alice.account);
    // The device-code fixture already holds an MBI_SSL token: it works.
    assert_eq!(exchange(&fake, &device.access_token).await.0, 200);
    // A token for another resource (what the v1 device-code poll gives)
    // is refused.
    let (spaces, _) = fake.identity().issue_access_token(
        &alice.account,
        TEAMS_WEB_CLIENT_ID,
        "https://api.spaces.skype.com/user_impersonation",
    );
    assert_eq!(exchange(&fake, &spaces).await.0, 401);
    // An expired MBI token is refused too.
    fake.identity().expire_access_token(&device.access_token);
    assert_eq!(exchange(&fake, &device.access_token).await.0, 401);
    // A refresh at the SPA endpoint of the same server gives a good one.
    let spa = fake.identity().issue_spa_tokens(&alice.account);
    let response = reqwest::Client::new()
        .post(format!("{}/consumers/oauth2/v2.0/token", fake.base_url()))
        .header("origin", TEAMS_ORIGIN)
        .form_pairs(&[
            ("grant_type", "refresh_token"),
            ("client_id", TEAMS_WEB_CLIENT_ID),
            ("refresh_token", spa.refresh_token.as_str()),
            ("scope", TEAMS_SCOPES),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], MBI_SCOPE);
    assert_eq!(
        exchange(&fake, body["access_token"].as_str().unwrap())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn conversations_are_paged_by_page_size_and_backward_links_reach_every_chat() {
    let fake = FakeTeams::start().await;
    let (alice, bob, dm) = two_friends(&fake).await;
    let carol = fake.add_account("carol", "Carol");
    let group = fake.group("Plans", &[&alice, &bob, &carol]);
    let legacy = fake.legacy_dm(&alice, &carol);
    let other = fake.dm(&alice, &carol);
    fake.post(&dm, &bob, "newest");
    fake.force_page_size(2);
    let client = login(&fake, &alice).await;

    let mut seen = Vec::new();
    let mut url = "/v1/users/ME/conversations?startTime=0&pageSize=100&view=msnp24Equivalent&targetType=Passport|Skype|Lync|Thread".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = client.get(&url).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        let conversations = body["conversations"].as_array().unwrap();
        // No page is bigger than the forced size.
        assert!(conversations.len() <= 2);
        assert_eq!(body["_metadata"]["totalCount"], 4);
        seen.extend(
            conversations
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match body["_metadata"]["backwardLink"].as_str() {
            // The link is a full URL that keeps the query.
            Some(next) => {
                assert!(next.starts_with(&client.chat) && next.contains("view=msnp24Equivalent"));
                url = next.to_owned();
            }
            None => break,
        }
    }
    // Two pages of two, every chat once, the most recently active first.
    assert_eq!(pages, 2);
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0], dm);
    for chat in [&group, &legacy, &other] {
        assert!(seen.contains(chat), "{chat} missing from {seen:?}");
    }
    // The legacy 1:1 is named by the peer and has no threadProperties;
    // the 1:1s mark themselves one way or the other.
    let (_, body) = client
        .get(&format!("/v1/users/ME/conversations/{legacy}"))
        .await;
    assert_eq!(body["id"], carol.mri.as_str());
    assert!(body.get("threadProperties").is_none_or(Value::is_null));
    let (_, first) = client
        .get(&format!("/v1/users/ME/conversations/{dm}"))
        .await;
    let (_, second) = client
        .get(&format!("/v1/users/ME/conversations/{other}"))
        .await;
    assert_eq!(
        first["threadProperties"]["productThreadType"],
        "OneToOneChat"
    );
    assert_eq!(second["threadProperties"]["uniquerosterthread"], "true");
    // The group has its topic, and its last message is the full message.
    let (_, body) = client
        .get(&format!("/v1/users/ME/conversations/{group}"))
        .await;
    assert_eq!(body["threadProperties"]["topic"], "Plans");
    assert_eq!(body["lastMessage"]["type"], "Message");
    // Carol sees the legacy 1:1 under Alice's MRI.
    let carols = login(&fake, &carol).await;
    let (status, body) = carols
        .get(&format!("/v1/users/ME/conversations/{}", alice.mri))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn messages_come_newest_first_from_start_time_a_page_at_a_time() {
    let fake = FakeTeams::start().await;
    let (alice, bob, chat) = two_friends(&fake).await;
    let ids: Vec<String> = (0..5)
        .map(|i| fake.post(&chat, &bob, &format!("m{i}")))
        .collect();
    let client = login(&fake, &alice).await;

    // Everything, newest first.
    let body = client
        .messages(&chat, "startTime=0&pageSize=50&view=msnp24Equivalent")
        .await;
    let got: Vec<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(got, newest_first);
    // From the third message's arrival on: only it and later ones.
    let body = client
        .messages(&chat, &format!("startTime={}&pageSize=50", ids[2]))
        .await;
    let got: Vec<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    // A page of two, then the backward link for the older ones.
    let body = client.messages(&chat, "startTime=0&pageSize=2").await;
    let got: Vec<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone()]);
    let next = body["_metadata"]["backwardLink"].as_str().unwrap();
    let (_, body) = client.get(next).await;
    let got: Vec<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(got, [ids[2].clone(), ids[1].clone()]);
    // The sync state gives later changes only: an edit and a new message.
    let body = client.messages(&chat, "startTime=0").await;
    let sync = body["_metadata"]["syncState"].as_str().unwrap().to_owned();
    fake.edit(&chat, &ids[0], "m0 edited");
    let new = fake.post(&chat, &bob, "m5");
    let (_, body) = client.get(&sync).await;
    let got: Vec<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(got, [new, ids[0].clone()]);
    // A bad query is a 400, not a panic.
    let (status, _) = client
        .get(&format!(
            "/v1/users/ME/conversations/{chat}/messages?startTime=soon"
        ))
        .await;
    assert_eq!(status, 400);
    let (status, _) = client
        .get(&format!(
            "/v1/users/ME/conversations/{chat}/messages?syncState=%%%"
        ))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_repeated_clientmessageid_answers_the_first_message_without_a_duplicate() {
    let fake = FakeTeams::start().await;
    let (alice, _, chat) = two_friends(&fake).await;
    let client = login(&fake, &alice).await;

    let (status, headers, first) = client
        .call_with_headers(
            Method::POST,
            &format!("/v1/users/ME/conversations/{chat}/messages"),
            Some(json!({"clientmessageid": "1715842512004000001", "content": "<p>hi &amp; bye</p>", "messagetype": "RichText/Html", "contenttype": "text"})),
        )
        .await;
    // 201, the arrival time as a number, and a Location with the id.
    assert_eq!(status, 201, "{first}");
    let arrival = first["OriginalArrivalTime"].as_u64().unwrap();
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.ends_with(&format!("/messages/{arrival}")),
        "{location}"
    );
    // The retry answers the same message.
    let (status, again) = client
        .send(&chat, "1715842512004000001", "hi &amp; bye")
        .await;
    assert_eq!(status, 201);
    assert_eq!(again["OriginalArrivalTime"], arrival);
    // One message, with the posted clientmessageid, and two POSTs seen.
    let messages = fake.messages(&chat);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].clientmessageid, "1715842512004000001");
    assert_eq!(messages[0].sender, alice.mri);
    assert_eq!(messages[0].text(), "hi & bye");
    assert_eq!(fake.sends(&chat), 2);
    // Another clientmessageid is another message.
    client.send(&chat, "1715842512004000002", "again").await;
    assert_eq!(fake.messages(&chat).len(), 2);
    // A numeric clientmessageid works as well.
    let (status, _) = client
        .call(
            Method::POST,
            &format!("/v1/users/ME/conversations/{chat}/messages"),
            Some(json!({"clientmessageid": 1715842512004000003_u64, "content": "n", "messagetype": "Text"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        fake.messages(&chat)[2].clientmessageid,
        "1715842512004000003"
    );
}

#[tokio::test]
async fn an_expired_skypetoken_gets_401_with_error_code_911() {
    let fake = FakeTeams::start().await;
    let (alice, _, _) = two_friends(&fake).await;
    let client = login(&fake, &alice).await;
    assert_eq!(client.get("/v1/users/ME/conversations").await.0, 200);

    fake.expire_skypetokens();
    let (status, body) = client.get("/v1/users/ME/conversations").await;
    // The documented body.
    assert_eq!(status, 401);
    assert_eq!(body["errorCode"], 911);
    assert_eq!(body["message"], "Authentication failed.");
    // A new exchange gives a working token; the X-Skypetoken header works.
    let fresh = login(&fake, &alice).await;
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/users/ME/conversations",
            fake.chat_service_afd_url()
        ))
        .header("x-skypetoken", &fresh.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // No token at all is a 401 as well.
    let response = reqwest::get(format!(
        "{}/v1/users/ME/conversations",
        fake.chat_service_url()
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_retry_after_in_seconds_then_as_a_date() {
    let fake = FakeTeams::start().await;
    let (alice, _, chat) = two_friends(&fake).await;
    let client = login(&fake, &alice).await;
    fake.rate_limit_next(2, Duration::from_secs(7));

    let (status, headers, body) = client
        .call_with_headers(Method::GET, "/v1/users/ME/conversations", None)
        .await;
    // The first says seconds, with the Teams client's body.
    assert_eq!(status, 429);
    assert_eq!(body["errorCode"], 429);
    assert_eq!(headers["retry-after"], "7");
    // The second an HTTP date about 7 s ahead.
    let (status, headers, _) = client
        .call_with_headers(
            Method::POST,
            &format!("/v1/users/ME/conversations/{chat}/messages"),
            Some(json!({"content": "x"})),
        )
        .await;
    assert_eq!(status, 429);
    let date = httpdate::parse_http_date(headers["retry-after"].to_str().unwrap()).unwrap();
    let ahead = date
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((6..=8).contains(&ahead), "{ahead}");
    // The throttled send never reached the chat; then it works again.
    assert_eq!(fake.sends(&chat), 0);
    assert_eq!(client.get("/v1/users/ME/conversations").await.0, 200);
    let throttled = fake.calls().iter().filter(|c| c.status == 429).count();
    assert_eq!(throttled, 2);
}

#[tokio::test]
async fn a_failing_thread_answers_500_on_its_messages_only() {
    let fake = FakeTeams::start().await;
    let (alice, bob, chat) = two_friends(&fake).await;
    let group = fake.group("Other", &[&alice, &bob]);
    let client = login(&fake, &alice).await;
    fake.fail_thread(&chat, 500);

    let (status, body) = client
        .get(&format!("/v1/users/ME/conversations/{chat}/messages"))
        .await;
    assert_eq!((status, body["errorCode"].as_u64()), (500, Some(500)));
    // Sending there fails too (but counts as arrived).
    assert_eq!(client.send(&chat, "1", "x").await.0, 500);
    assert_eq!(fake.sends(&chat), 1);
    assert!(fake.messages(&chat).is_empty());
    // The other chat and the list work.
    assert_eq!(
        client
            .get(&format!("/v1/users/ME/conversations/{group}/messages"))
            .await
            .0,
        200
    );
    assert_eq!(client.get("/v1/users/ME/conversations").await.0, 200);
    // Healed, it works again.
    fake.heal_thread(&chat);
    assert_eq!(client.send(&chat, "1", "x").await.0, 201);
}

#[tokio::test]
async fn edits_deletions_and_reactions_show_and_bump_the_conversation() {
    let fake = FakeTeams::start().await;
    let (alice, bob, chat) = two_friends(&fake).await;
    let client = login(&fake, &alice).await;
    let (_, sent) = client.send(&chat, "100", "first").await;
    let id = sent["OriginalArrivalTime"].as_u64().unwrap();
    let conversation = format!("/v1/users/ME/conversations/{chat}");
    let version = |body: &Value| body["version"].as_u64().unwrap();
    let (_, before) = client.get(&conversation).await;

    // An edit by the sender.
    let url = format!("{conversation}/messages/{id}");
    let (status, _) = client
        .call(Method::PUT, &url, Some(json!({"content": "<p>second</p>"})))
        .await;
    assert_eq!(status, 200);
    let (_, after_edit) = client.get(&conversation).await;
    assert!(version(&after_edit) > version(&before));
    let last = &after_edit["lastMessage"];
    assert_eq!(last["content"], "<p>second</p>");
    assert!(last["properties"]["edittime"].is_string());
    assert_eq!(last["skypeeditedid"], "100");
    // Only the sender may edit.
    let bobs = login(&fake, &bob).await;
    let (status, _) = bobs
        .call(Method::PUT, &url, Some(json!({"content": "mine"})))
        .await;
    assert_eq!(status, 403);
    // Bob likes it; the reaction is in properties.emotions.
    let (status, _) = bobs
        .call(
            Method::PUT,
            &format!("{url}/properties?name=emotions"),
            Some(json!({"emotions": {"key": "like", "value": 1_700_000_000_000_u64}})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = client.get(&conversation).await;
    let emotions = &body["lastMessage"]["properties"]["emotions"];
    assert_eq!(emotions[0]["key"], "like");
    assert_eq!(emotions[0]["users"][0]["mri"], bob.mri.as_str());
    assert_eq!(
        fake.messages(&chat)[0].reactions["like"],
        std::slice::from_ref(&bob.mri)
    );
    // ... and takes it back.
    let (status, _) = bobs
        .call(
            Method::DELETE,
            &format!("{url}/properties?name=emotions"),
            Some(json!({"emotions": {"key": "like"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(fake.messages(&chat)[0].reactions.is_empty());
    // A deletion empties the content and sets deletetime.
    let (status, _) = client.call(Method::DELETE, &url, None).await;
    assert_eq!(status, 200);
    let (_, after_delete) = client.get(&conversation).await;
    assert!(version(&after_delete) > version(&after_edit));
    assert_eq!(after_delete["lastMessage"]["content"], "");
    assert!(after_delete["lastMessage"]["properties"]["deletetime"].is_string());
    assert!(fake.messages(&chat)[0].deleted);
}

#[tokio::test]
async fn typing_is_recorded_and_read_markers_are_kept_per_member() {
    let fake = FakeTeams::start().await;
    let (alice, bob, chat) = two_friends(&fake).await;
    let id = fake.post(&chat, &bob, "read me");
    let client = login(&fake, &alice).await;
    let url = format!("/v1/users/ME/conversations/{chat}/messages");

    let (status, _) = client
        .call(
            Method::POST,
            &url,
            Some(json!({"messagetype": "Control/Typing", "contenttype": "Application/Message", "content": ""})),
        )
        .await;
    assert_eq!(status, 201);
    // Typing is recorded, not stored, and not counted as a send.
    let typing = fake.typing(&chat);
    assert_eq!(typing.len(), 1);
    assert!(typing[0].typing && typing[0].mri == alice.mri);
    assert_eq!(fake.messages(&chat).len(), 1);
    assert_eq!(fake.sends(&chat), 0);

    let horizon = format!("{id};{id};123");
    let (status, _) = client
        .call(
            Method::PUT,
            &format!("/v1/users/ME/conversations/{chat}/properties?name=consumptionhorizon"),
            Some(json!({"consumptionhorizon": horizon})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(fake.horizons(&chat)[&alice.mri], horizon);
    // The thread lists every member's marker, Bob's the default.
    let (_, body) = client
        .get(&format!("/v1/threads/{chat}/consumptionhorizons"))
        .await;
    let horizons = body["consumptionhorizons"].as_array().unwrap();
    assert_eq!(horizons.len(), 2);
    assert!(
        horizons
            .iter()
            .any(|h| h["id"] == alice.mri.as_str() && h["consumptionhorizon"] == horizon.as_str())
    );
    assert!(
        horizons
            .iter()
            .any(|h| h["id"] == bob.mri.as_str() && h["consumptionhorizon"] == "0;0;0")
    );
    // A malformed marker is a 400.
    let (status, _) = client
        .call(
            Method::PUT,
            &format!("/v1/users/ME/conversations/{chat}/properties?name=consumptionhorizon"),
            Some(json!({"consumptionhorizon": "yesterday"})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_echo_bot_types_then_answers_and_history_keeps_control_messages() {
    let fake = FakeTeams::start().await;
    let alice = fake.add_account("alice", "Alice");
    let echo = fake.add_account("teams-echo", "Teams Echo");
    fake.set_echo_bot(&echo);
    let chat = fake.dm(&alice, &echo);
    let client = login(&fake, &alice).await;
    client.send(&chat, "1", "hello &lt;you&gt;").await;

    let messages = fake.messages(&chat);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].sender, echo.mri);
    assert_eq!(messages[1].text(), "echo: hello <you>");
    // The history over HTTP has the bot's typing between the two.
    let body = client.messages(&chat, "startTime=0").await;
    let types: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messagetype"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["RichText/Html", "Control/Typing", "RichText/Html"]);
    // A group's history starts with thread activity from the thread.
    let group = fake.group("G", &[&alice, &echo]);
    let history = fake.history(&group);
    assert_eq!(history[0].messagetype, "ThreadActivity/AddMember");
    assert_eq!(history[0].sender, group);
    assert!(fake.messages(&group).is_empty());
}

#[tokio::test]
async fn messages_use_every_documented_shape() {
    let fake = FakeTeams::start().await;
    let (alice, bob, chat) = two_friends(&fake).await;
    for i in 0..12 {
        fake.post(&chat, &bob, &format!("text {i} & more"));
    }
    fake.post(&chat, &bob, "42");
    fake.post(&chat, &bob, "42");
    let client = login(&fake, &alice).await;
    let body = client.messages(&chat, "startTime=0&pageSize=100").await;
    let messages = body["messages"].as_array().unwrap();
    let any = |check: &dyn Fn(&Value) -> bool| messages.iter().any(check);
    // ids and sequence ids as numbers and as strings.
    assert!(any(&|m| m["id"].is_string()) && any(&|m| m["id"].is_u64()));
    assert!(any(&|m| m["sequenceId"].is_string()) && any(&|m| m["sequenceId"].is_u64()));
    // `from` as a contacts URL and as an object.
    assert!(any(&|m| {
        m["from"]
            .as_str()
            .is_some_and(|f| f.ends_with(&format!("/contacts/{}", bob.mri)))
    }));
    assert!(any(
        &|m| m["from"]["id"] == bob.mri.as_str() && m["from"]["displayName"] == "Bob Example"
    ));
    // content as a string with entities, an object and a number.
    assert!(any(&|m| m["content"]
        .as_str()
        .is_some_and(|c| c.contains("&amp;"))));
    assert!(any(&|m| m["content"]["text"].is_string()));
    assert!(any(&|m| m["content"] == 42));
    // Arrival times with 3 and with 7 fractional digits.
    let digits = |m: &Value| {
        let t = m["originalarrivaltime"].as_str().unwrap();
        t.len() - t.find('.').unwrap() - 2
    };
    assert!(any(&|m| digits(m) == 3) && any(&|m| digits(m) == 7));
    // The message types and content types.
    for kind in ["Text", "RichText", "RichText/Html"] {
        assert!(any(&|m| m["messagetype"] == kind), "{kind}");
    }
    assert!(any(&|m| m["contenttype"] == "text") && any(&|m| m["contenttype"] == "Text"));
    // Every message has the fields clients read.
    for m in messages {
        for field in [
            "clientmessageid",
            "conversationid",
            "composetime",
            "imdisplayname",
            "version",
        ] {
            assert!(m[field].is_string(), "{field} in {m}");
        }
        assert_eq!(m["clientmessageid"].as_str().unwrap().len(), 19);
    }
    // The thread's members carry ids and roles.
    let (_, thread) = client
        .get(&format!("/v1/threads/{chat}?view=msnp24Equivalent"))
        .await;
    let members = thread["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert!(
        members
            .iter()
            .all(|m| m["id"].as_str().unwrap().starts_with("8:live:"))
    );
}

#[tokio::test]
async fn files_and_pictures_download_with_a_skypetoken_only() {
    let fake = FakeTeams::start().await;
    let (alice, bob, chat) = two_friends(&fake).await;
    fake.post_file(&chat, &bob, "notes.txt", b"hello file".to_vec());
    fake.post_image(&chat, &bob, "cat.png", vec![0x89, b'P', b'N', b'G']);
    let client = login(&fake, &alice).await;
    let body = client.messages(&chat, "startTime=0").await;
    let messages = body["messages"].as_array().unwrap();

    // The file is a JSON string in properties.files.
    let file = messages
        .iter()
        .find(|m| m["properties"]["files"].is_string())
        .unwrap();
    let files: Value = serde_json::from_str(file["properties"]["files"].as_str().unwrap()).unwrap();
    assert_eq!(files[0]["fileName"], "notes.txt");
    let url = files[0]["fileInfo"]["fileUrl"].as_str().unwrap();
    assert!(url.starts_with(&fake.base_url()));
    let (status, _) = client.get(url).await;
    assert_eq!(status, 200);
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 401);
    let bytes = client
        .http
        .get(url)
        .header("authentication", format!("skypetoken={}", client.token))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"hello file");
    // The picture is a URIObject on the fake's media store.
    let picture = messages
        .iter()
        .find(|m| m["messagetype"] == "RichText/UriObject")
        .unwrap();
    let content = picture["content"].as_str().unwrap();
    let uri = content
        .split("uri=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let bytes = client
        .http
        .get(format!("{uri}/views/imgo"))
        .header("authorization", format!("skype_token {}", client.token))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len(), 4);
}

#[tokio::test]
async fn malformed_requests_get_400_and_strangers_get_nothing() {
    let fake = FakeTeams::start().await;
    let (alice, bob, chat) = two_friends(&fake).await;
    let carol = fake.add_account("carol", "Carol");
    let id = fake.post(&chat, &bob, "x");
    let client = login(&fake, &alice).await;
    let url = format!("{}/v1/users/ME/conversations/{chat}/messages", client.chat);
    let raw = |body: &'static str| {
        client
            .http
            .post(&url)
            .header("authentication", format!("skypetoken={}", client.token))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Not JSON, not an object, no content.
    assert_eq!(raw("{not json").await.unwrap().status(), 400);
    assert_eq!(raw("[1]").await.unwrap().status(), 400);
    assert_eq!(
        raw("{\"messagetype\":\"Text\"}").await.unwrap().status(),
        400
    );
    // A reaction without a key, a message id that isn't one.
    let (status, _) = client
        .call(
            Method::PUT,
            &format!("/v1/users/ME/conversations/{chat}/messages/{id}/properties?name=emotions"),
            Some(json!({"emotions": {}})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = client
        .call(
            Method::DELETE,
            &format!("/v1/users/ME/conversations/{chat}/messages/abc"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // A body over the limit is refused before it is read.
    let big = "x".repeat(300 << 10);
    let response = client
        .http
        .post(&url)
        .header("authentication", format!("skypetoken={}", client.token))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // Someone outside the chat can't read it or its thread.
    let carols = login(&fake, &carol).await;
    assert_eq!(carols.messages_status(&chat).await, 404);
    assert_eq!(carols.get(&format!("/v1/threads/{chat}")).await.0, 403);
}

impl Client {
    async fn messages_status(&self, chat: &str) -> u16 {
        self.get(&format!("/v1/users/ME/conversations/{chat}/messages"))
            .await
            .0
    }
}

#[tokio::test]
async fn the_state_file_round_trips_accounts_chats_messages_and_logins() {
    init_tls();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake-teams.json");
    let first = FakeTeams::start_on("127.0.0.1:0".parse().unwrap(), Some(path.clone()))
        .await
        .unwrap();
    assert!(first.seed_demo());
    let alice = first.account("alice").unwrap();
    let bob = first.account("bob").unwrap();
    let chat = first.dm(&alice, &bob);
    let sent = first.post(&chat, &alice, "before the restart");
    first.post_file(&chat, &alice, "a.txt", b"abc".to_vec());
    let tokens = first.identity().issue_spa_tokens(&alice.account);
    let client = login(&first, &alice).await;
    let (_, before) = client.send(&chat, "1715842512004000077", "sent once").await;
    first.save(&path).unwrap();

    // A second fake from the same file.
    let second = FakeTeams::start_on("127.0.0.1:0".parse().unwrap(), Some(path.clone()))
        .await
        .unwrap();
    // Seeding again is a no-op; accounts keep their ids.
    assert!(!second.seed_demo());
    assert_eq!(second.account("alice").unwrap(), alice);
    assert_eq!(second.accounts().len(), 3);
    let messages = second.messages(&chat);
    assert_eq!(messages[messages.len() - 3].id, sent);
    assert_eq!(
        messages[messages.len() - 2].file.as_ref().unwrap().name,
        "a.txt"
    );
    // The refresh token issued before still refreshes, and the skypetoken
    // still works.
    let response = reqwest::Client::new()
        .post(format!("{}/consumers/oauth2/v2.0/token", second.base_url()))
        .header("origin", TEAMS_ORIGIN)
        .form_pairs(&[
            ("grant_type", "refresh_token"),
            ("client_id", TEAMS_WEB_CLIENT_ID),
            ("refresh_token", tokens.refresh_token.as_str()),
            ("scope", TEAMS_SCOPES),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let moved = Client {
        chat: second.chat_service_url(),
        ..client
    };
    assert_eq!(moved.get("/v1/users/ME/conversations").await.0, 200);
    // A retry of a message sent before the restart is still recognized.
    let count = second.messages(&chat).len();
    let (_, again) = moved.send(&chat, "1715842512004000077", "sent once").await;
    assert_eq!(again, before);
    assert_eq!(second.messages(&chat).len(), count);
    // New ids never repeat old ones.
    let after = second.post(&chat, &bob, "after the restart");
    assert!(after.parse::<u64>().unwrap() > sent.parse::<u64>().unwrap());
    // The echo bot still answers in the demo group.
    let group = second
        .chats()
        .into_iter()
        .find(|c| {
            second
                .history(c)
                .iter()
                .any(|m| m.content.contains("Weft demo"))
        })
        .unwrap();
    second.post(&group, &bob, "ping");
    assert_eq!(second.messages(&group).last().unwrap().text(), "echo: ping");
}

#[tokio::test]
async fn the_demo_pages_approve_a_device_code_and_show_a_session_capture() {
    let fake = FakeTeams::start().await;
    fake.seed_demo();
    fake.identity()
        .set_verification_url(&format!("{}/fake/devicelogin", fake.base_url()));
    init_tls();
    let http = reqwest::Client::new();
    let start: Value = http
        .post(format!("{}/common/oauth2/devicecode", fake.base_url()))
        .form_pairs(&[
            ("client_id", TEAMS_DEVICE_CLIENT_ID),
            ("resource", SPACES_RESOURCE),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The answer sends the user to the fake's own page.
    let page = start["verification_url"].as_str().unwrap();
    assert_eq!(page, format!("{}/fake/devicelogin", fake.base_url()));
    let form = page_text(&http, page).await;
    assert!(form.contains("<form") && form.contains("Alice Example"));
    // A wrong code says so; the right one approves.
    let wrong = http
        .post(page)
        .form_pairs(&[("code", "NOPE"), ("account", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let code = start["user_code"].as_str().unwrap().to_ascii_lowercase();
    let right = http
        .post(page)
        .form_pairs(&[("code", code.as_str()), ("account", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(fake.identity().pending_user_codes().is_empty());
    // The session page holds a capture with an encrypted cache and cookie.
    let html = page_text(&http, format!("{}/fake/session/bob", fake.base_url())).await;
    let start = html.find("<textarea readonly>").unwrap() + "<textarea readonly>".len();
    let end = html.find("</textarea>").unwrap();
    let capture = html[start..end]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let capture: Value = serde_json::from_str(&capture).unwrap();
    assert!(capture["cookies"][ENCRYPTION_COOKIE].is_string());
    assert!(capture["localStorage"]["msal.2.account.keys"].is_string());
    // An unknown account is a 404 page.
    let missing = http
        .get(format!("{}/fake/session/mallory", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_teams_account_logs_in_from_a_captured_msal_cache() {
    let fake = FakeTeams::start().await;
    let (alice, _, _) = two_friends(&fake).await;
    let tokens = fake.identity().issue_spa_tokens(&alice.account);
    let capture: Value = serde_json::from_str(&MsalCache::signed_in(&tokens).capture()).unwrap();
    // The cache's MBI_SSL access token, read as a connector would, works.
    let storage = capture["localStorage"].as_object().unwrap();
    let secret = storage
        .values()
        .filter_map(|v| serde_json::from_str::<Value>(v.as_str()?).ok())
        .find(|v| {
            v["credentialType"] == "AccessToken"
                && v["target"].as_str().is_some_and(|t| t.contains(MBI_SCOPE))
        })
        .unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(exchange(&fake, &secret).await.0, 200);
}

#[tokio::test]
async fn both_chat_service_bases_serve_the_same_chats_with_their_own_links() {
    let fake = FakeTeams::start().await;
    let (alice, bob, chat) = two_friends(&fake).await;
    fake.post(&chat, &bob, "hi");
    let msgapi = login(&fake, &alice).await;
    let afd = Client {
        chat: fake.chat_service_afd_url(),
        ..login(&fake, &alice).await
    };
    let a = msgapi.messages(&chat, "startTime=0").await;
    let b = afd.messages(&chat, "startTime=0").await;
    assert_eq!(id_of(&a["messages"][0]), id_of(&b["messages"][0]));
    // Links follow the base the request came in on.
    let link = b["messages"][0]["conversationLink"].as_str().unwrap();
    assert!(link.starts_with(&fake.chat_service_afd_url()), "{link}");
    // The legacy long-poll registration is refused as on consumer Teams.
    let (status, _) = afd
        .call(
            Method::POST,
            "/v1/users/ME/endpoints",
            Some(json!({"endpointFeatures": "Agent"})),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_demo_index_posts_in_a_chat_as_one_of_its_members() {
    let fake = FakeTeams::start().await;
    let alice = fake.add_account("alice", "Alice Example");
    let bob = fake.add_account("bob", "Bob Example");
    fake.add_account("carol", "Carol Example");
    let dm = fake.dm(&alice, &bob);
    init_tls();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let index = page_text(&http, format!("{}/fake", fake.base_url())).await;
    assert!(
        index.contains("action=\"/fake/post\"") && index.contains(&dm),
        "{index}"
    );
    let post = |account: &'static str, text: &'static str, chat: String| {
        let http = http.clone();
        let url = format!("{}/fake/post", fake.base_url());
        async move {
            http.post(url)
                .form_pairs(&[
                    ("chat", chat.as_str()),
                    ("account", account),
                    ("text", text),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let posted = post("bob", "hi from the <b>app</b>", dm.clone()).await;
    assert_eq!(posted.status(), 303);
    let messages = fake.messages(&dm);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sender, bob.mri);
    assert_eq!(messages[0].text(), "hi from the <b>app</b>");
    // Someone outside the chat, an unknown chat and an empty message are
    // refused, and nothing is posted.
    assert_eq!(post("carol", "let me in", dm.clone()).await.status(), 400);
    assert_eq!(
        post("bob", "where?", "19:nope@thread.v2".into())
            .await
            .status(),
        404
    );
    assert_eq!(post("bob", " ", dm.clone()).await.status(), 400);
    assert_eq!(fake.messages(&dm).len(), 1);
}
