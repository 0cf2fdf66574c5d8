//! The chat service's JSON (reference §4.2–4.4 and its field reports),
//! read leniently: ids and times as numbers or strings, `from` as a URL
//! or an object, `content` as a string, an object or a number,
//! `properties.files` and `emotions` as JSON or as JSON in a string. A
//! list item of an unexpected shape is skipped, never fatal, and unknown
//! fields are ignored without being kept.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::ids;
use crate::timefmt;

/// A value that is `None`, not an error, when it has an unexpected shape.
pub(crate) struct Lenient<T>(pub(crate) Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(Self(serde_json::from_value(value).ok()))
    }
}

/// A scalar as text: strings as they are, numbers and booleans written out.
fn scalar_text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn flex_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(scalar_text(Value::deserialize(deserializer)?))
}

fn flex_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// `content`: a string, a number, or an object with the text in `text`,
/// `content` or `html`.
fn flex_content<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Object(mut object) => ["text", "content", "html", "value"]
            .iter()
            .find_map(|key| object.remove(*key).and_then(scalar_text)),
        other => scalar_text(other),
    })
}

/// Who sent a message, as `from` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Author {
    /// The sender's MRI.
    pub(crate) id: String,
    /// A display name, if `from` is an object that has one.
    pub(crate) name: Option<String>,
}

/// `from`: a contact URL (its last segment is the MRI), a bare MRI, or an
/// object `{"id": …, "displayName": …}`.
fn flex_from<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Author>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(link) => ids::user_from_link(&link).map(|id| Author { id, name: None }),
        Value::Object(mut object) => {
            let id = ["id", "mri", "userId"]
                .iter()
                .find_map(|key| object.remove(*key).and_then(scalar_text))
                .and_then(|id| ids::user_from_link(&id));
            let name = ["displayName", "displayname", "name"]
                .iter()
                .find_map(|key| object.remove(*key).and_then(scalar_text))
                .filter(|n| !n.trim().is_empty());
            id.map(|id| Author { id, name })
        }
        _ => None,
    })
}

/// A list given as JSON or as a string of JSON; items of another shape
/// are dropped.
fn flex_json_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let items: Vec<Lenient<T>> = match Value::deserialize(deserializer)? {
        Value::String(json) => serde_json::from_str(&json).unwrap_or_default(),
        value @ Value::Array(_) => serde_json::from_value(value).unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(items.into_iter().filter_map(|item| item.0).collect())
}

// ---------------------------------------------------------------------
// Conversations (§4.2)

/// `GET /v1/users/ME/conversations`: one page.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ConversationPage {
    conversations: Vec<Lenient<RawConversation>>,
    #[serde(rename = "_metadata")]
    metadata: Lenient<PageMetadata>,
}

/// A page's `_metadata`: where the next (older) page is.
#[derive(Deserialize, Default)]
#[serde(default)]
struct PageMetadata {
    #[serde(rename = "backwardLink", deserialize_with = "flex_string")]
    backward_link: Option<String>,
    #[serde(rename = "syncState", deserialize_with = "flex_string")]
    sync_state: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConversation {
    #[serde(deserialize_with = "flex_string")]
    id: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    version: Option<String>,
    #[serde(rename = "lastUpdatedMessageId", deserialize_with = "flex_string")]
    last_updated_message_id: Option<String>,
    #[serde(rename = "lastUpdatedMessageVersion", deserialize_with = "flex_string")]
    last_updated_message_version: Option<String>,
    #[serde(rename = "threadProperties")]
    thread_properties: Lenient<ThreadProperties>,
    #[serde(rename = "lastMessage")]
    last_message: Lenient<RawMessage>,
    properties: Lenient<ConversationProperties>,
}

/// A list item's own `properties`: the login's read marker.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConversationProperties {
    #[serde(deserialize_with = "flex_string")]
    consumptionhorizon: Option<String>,
}

/// The message a consumption horizon (`<message id>;<time ms>;<client
/// message id>`) reads up to, and when; `None` for `0;0;0`, a member who
/// never read.
pub(crate) fn horizon_message(horizon: &str) -> Option<(String, u64)> {
    let mut parts = horizon.trim().split(';');
    let id = parts.next()?.trim();
    if id.is_empty() || id == "0" {
        return None;
    }
    let time = parts
        .next()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    Some((id.to_owned(), time))
}

/// `GET /v1/threads/{id}/consumptionhorizons`: each member's read marker
/// (field reports).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct HorizonPage {
    consumptionhorizons: Vec<Lenient<RawHorizon>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawHorizon {
    #[serde(deserialize_with = "flex_string")]
    id: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    consumptionhorizon: Option<String>,
}

impl HorizonPage {
    /// Each member's MRI and the message they read up to, and when
    /// (`None`: nothing yet).
    pub(crate) fn into_reads(self) -> Vec<(String, Option<(String, u64)>)> {
        self.consumptionhorizons
            .into_iter()
            .filter_map(|h| h.0)
            .filter_map(|h| {
                let member = h.id.and_then(|id| ids::user_from_link(&id))?;
                let read = h.consumptionhorizon.as_deref().and_then(horizon_message);
                Some((member, read))
            })
            .collect()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ThreadProperties {
    #[serde(deserialize_with = "flex_string")]
    topic: Option<String>,
    #[serde(rename = "productThreadType", deserialize_with = "flex_string")]
    product_thread_type: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    uniquerosterthread: Option<String>,
    #[serde(rename = "originalThreadId", deserialize_with = "flex_string")]
    original_thread_id: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    membercount: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    lastjoinat: Option<String>,
}

/// A chat of the conversation list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chat {
    /// The conversation id, for the message URLs.
    pub(crate) conversation_id: String,
    /// The thread id, the portal's chat id: `threadProperties.originalThreadId`
    /// when present, else the conversation id.
    pub(crate) thread_id: String,
    /// Whether it is a one-to-one chat.
    pub(crate) direct: bool,
    /// Its topic, if it has one.
    pub(crate) topic: Option<String>,
    /// Changes whenever the chat has news (a message, an edit, a
    /// reaction): the poll fetches only chats whose marker changed.
    pub(crate) marker: String,
    /// Changes when the chat itself changes (topic, members): discovery
    /// resyncs only chats whose shape changed.
    pub(crate) shape: String,
    /// Its last message, if the list gives it.
    pub(crate) last_message: Option<Msg>,
    /// The message the login has read up to (on any of its devices).
    pub(crate) own_read: Option<String>,
}

impl ConversationPage {
    /// The page's chats and the link to the next page, if any.
    pub(crate) fn into_parts(self) -> (Vec<Chat>, Option<String>) {
        let chats = self
            .conversations
            .into_iter()
            .filter_map(|c| c.0)
            .filter_map(RawConversation::into_chat)
            .collect();
        let link = self
            .metadata
            .0
            .and_then(|m| m.backward_link)
            .filter(|l| !l.trim().is_empty());
        (chats, link)
    }
}

impl RawConversation {
    fn into_chat(self) -> Option<Chat> {
        let conversation_id = self.id.filter(|id| !id.trim().is_empty())?;
        let properties = self.thread_properties.0.unwrap_or_default();
        let thread_id = properties
            .original_thread_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| conversation_id.clone());
        let direct = ids::is_direct(
            &thread_id,
            properties.product_thread_type.as_deref(),
            properties.uniquerosterthread.as_deref(),
        );
        let topic = properties
            .topic
            .as_deref()
            .map(|t| crate::html::decode_entities(t.trim()))
            .filter(|t| !t.is_empty());
        let last_message = self.last_message.0.and_then(RawMessage::into_msg);
        let own_read = self
            .properties
            .0
            .and_then(|p| p.consumptionhorizon)
            .and_then(|h| horizon_message(&h))
            .map(|(message, _)| message);
        let marker = [
            self.version.as_deref(),
            self.last_updated_message_id.as_deref(),
            self.last_updated_message_version.as_deref(),
            last_message.as_ref().map(|m| m.id.as_str()),
            last_message.as_ref().and_then(|m| m.version.as_deref()),
        ]
        .map(|part| part.unwrap_or(""))
        .join("|");
        // Not the thread's `version`: it may move with every message.
        let shape = [
            if direct { "dm" } else { "group" },
            topic.as_deref().unwrap_or(""),
            properties.membercount.as_deref().unwrap_or(""),
            properties.lastjoinat.as_deref().unwrap_or(""),
        ]
        .join("|");
        Some(Chat {
            conversation_id,
            thread_id,
            direct,
            topic,
            marker,
            shape,
            last_message,
            own_read,
        })
    }
}

// ---------------------------------------------------------------------
// Threads (§4.2, members)

/// `GET /v1/threads/{id}`: its members.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ThreadInfo {
    members: Vec<Lenient<RawMember>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMember {
    #[serde(deserialize_with = "flex_string")]
    id: Option<String>,
    #[serde(rename = "userLink", deserialize_with = "flex_string")]
    user_link: Option<String>,
    #[serde(rename = "friendlyName", deserialize_with = "flex_string")]
    friendly_name: Option<String>,
    #[serde(rename = "displayName", deserialize_with = "flex_string")]
    display_name: Option<String>,
}

/// A chat member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The member's MRI.
    pub(crate) id: String,
    /// Their name, if the thread gives one.
    pub(crate) name: Option<String>,
}

impl ThreadInfo {
    /// The members with an id.
    pub(crate) fn into_members(self) -> Vec<Member> {
        self.members
            .into_iter()
            .filter_map(|m| m.0)
            .filter_map(|m| {
                let id = m.id.or(m.user_link)?;
                Some(Member {
                    id: ids::user_from_link(&id)?,
                    name: m
                        .friendly_name
                        .filter(|n| !n.trim().is_empty())
                        .or(m.display_name.filter(|n| !n.trim().is_empty())),
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------
// Messages (§4.3)

/// `GET …/messages`: one page, newest first.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct MessagePage {
    messages: Vec<Lenient<RawMessage>>,
    #[serde(rename = "_metadata")]
    metadata: Lenient<PageMetadata>,
}

/// A page of messages: the messages (with an id), the link to older
/// ones, and the `syncState` link that later gives what arrived or
/// changed since.
pub(crate) struct MessagePageParts {
    pub(crate) messages: Vec<Msg>,
    pub(crate) backward_link: Option<String>,
    pub(crate) sync_state: Option<String>,
}

impl MessagePage {
    /// The page's parts.
    pub(crate) fn into_parts(self) -> MessagePageParts {
        let messages = self
            .messages
            .into_iter()
            .filter_map(|m| m.0)
            .filter_map(RawMessage::into_msg)
            .collect();
        let metadata = self.metadata.0.unwrap_or_default();
        let link = |l: Option<String>| l.filter(|l| !l.trim().is_empty());
        MessagePageParts {
            messages,
            backward_link: link(metadata.backward_link),
            sync_state: link(metadata.sync_state),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMessage {
    #[serde(deserialize_with = "flex_string")]
    id: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    clientmessageid: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    messagetype: Option<String>,
    #[serde(deserialize_with = "flex_content")]
    content: Option<String>,
    #[serde(deserialize_with = "flex_from")]
    from: Option<Author>,
    #[serde(deserialize_with = "flex_string")]
    imdisplayname: Option<String>,
    #[serde(rename = "fromDisplayNameInToken", deserialize_with = "flex_string")]
    from_display_name_in_token: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    originalarrivaltime: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    composetime: Option<String>,
    #[serde(rename = "sequenceId", deserialize_with = "flex_u64")]
    sequence_id: Option<u64>,
    #[serde(deserialize_with = "flex_string")]
    version: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    skypeeditedid: Option<String>,
    properties: Lenient<RawProperties>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawProperties {
    #[serde(deserialize_with = "flex_string")]
    edittime: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    deletetime: Option<String>,
    #[serde(deserialize_with = "flex_json_list")]
    emotions: Vec<RawEmotion>,
    #[serde(deserialize_with = "flex_json_list")]
    files: Vec<RawFile>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEmotion {
    #[serde(deserialize_with = "flex_string")]
    key: Option<String>,
    users: Vec<Lenient<RawEmotionUser>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEmotionUser {
    #[serde(deserialize_with = "flex_string")]
    mri: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    id: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    time: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawFile {
    #[serde(rename = "fileName", deserialize_with = "flex_string")]
    file_name: Option<String>,
    #[serde(deserialize_with = "flex_string")]
    title: Option<String>,
    #[serde(rename = "fileInfo")]
    file_info: Lenient<RawFileInfo>,
    #[serde(rename = "objectUrl", deserialize_with = "flex_string")]
    object_url: Option<String>,
    #[serde(rename = "fileType", deserialize_with = "flex_string")]
    file_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawFileInfo {
    #[serde(rename = "fileUrl", deserialize_with = "flex_string")]
    file_url: Option<String>,
    #[serde(rename = "shareUrl", deserialize_with = "flex_string")]
    share_url: Option<String>,
}

/// One user's reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReactionEntry {
    /// The Teams reaction key (`like`, `heart`, …).
    pub(crate) key: String,
    /// Who reacted.
    pub(crate) user: String,
    /// When, in Unix milliseconds, if given.
    pub(crate) time_ms: Option<u64>,
}

/// A file attached through `properties.files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRef {
    /// Its name.
    pub(crate) name: String,
    /// Where to get it.
    pub(crate) url: String,
    /// Its type as Teams names it (`png`, `pdf`), if given.
    pub(crate) file_type: Option<String>,
}

/// A message as the connector uses it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Msg {
    /// The message id (epoch milliseconds in practice).
    pub(crate) id: String,
    /// Its `sequenceId`, if the service gives one.
    pub(crate) sequence_id: Option<u64>,
    /// When it arrived, in Unix milliseconds (0 if unknown).
    pub(crate) time_ms: u64,
    /// The sender's `clientmessageid`, if any.
    pub(crate) client_message_id: Option<String>,
    /// Its `messagetype`.
    pub(crate) message_type: String,
    /// Its content, as sent.
    pub(crate) content: String,
    /// The sender's MRI, if known.
    pub(crate) sender: Option<String>,
    /// The sender's display name, if given.
    pub(crate) sender_name: Option<String>,
    /// Its `version`.
    pub(crate) version: Option<String>,
    /// `skypeeditedid`: the message this one edits.
    pub(crate) edited_id: Option<String>,
    /// When it was last edited, in Unix milliseconds.
    pub(crate) edit_ms: Option<u64>,
    /// When it was deleted, in Unix milliseconds.
    pub(crate) delete_ms: Option<u64>,
    /// Its reactions.
    pub(crate) reactions: Vec<ReactionEntry>,
    /// Its files.
    pub(crate) files: Vec<FileRef>,
}

impl RawMessage {
    fn into_msg(self) -> Option<Msg> {
        let id = self
            .id
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())?;
        let time_ms = self
            .originalarrivaltime
            .as_deref()
            .and_then(timefmt::parse_time_ms)
            .or_else(|| self.composetime.as_deref().and_then(timefmt::parse_time_ms))
            .or_else(|| id.parse::<u64>().ok().filter(|n| *n >= 100_000_000_000))
            .unwrap_or(0);
        let properties = self.properties.0.unwrap_or_default();
        let reactions = properties
            .emotions
            .into_iter()
            .filter_map(|emotion| {
                let key = emotion.key.filter(|k| !k.trim().is_empty())?;
                Some(
                    emotion
                        .users
                        .into_iter()
                        .filter_map(|u| u.0)
                        .filter_map(move |user| {
                            Some(ReactionEntry {
                                key: key.clone(),
                                user: user
                                    .mri
                                    .or(user.id)
                                    .as_deref()
                                    .and_then(ids::user_from_link)?,
                                time_ms: user.time.as_deref().and_then(timefmt::parse_time_ms),
                            })
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .collect();
        let files = properties
            .files
            .into_iter()
            .filter_map(|file| {
                let info = file.file_info.0.unwrap_or_default();
                let url = info
                    .file_url
                    .or(file.object_url)
                    .or(info.share_url)
                    .filter(|u| !u.trim().is_empty())?;
                let name = file
                    .file_name
                    .filter(|n| !n.trim().is_empty())
                    .or(file.title.filter(|n| !n.trim().is_empty()))
                    .or_else(|| ids::last_segment(&url))
                    .unwrap_or_else(|| "file".into());
                Some(FileRef {
                    name,
                    url: url.trim().to_owned(),
                    file_type: file.file_type,
                })
            })
            .collect();
        let (sender, from_name) = match self.from {
            Some(author) => (Some(author.id), author.name),
            None => (None, None),
        };
        Some(Msg {
            id,
            sequence_id: self.sequence_id,
            time_ms,
            client_message_id: self.clientmessageid.filter(|c| !c.trim().is_empty()),
            message_type: self.messagetype.unwrap_or_default(),
            content: self.content.unwrap_or_default(),
            sender,
            sender_name: from_name
                .or(self.imdisplayname)
                .or(self.from_display_name_in_token)
                .map(|n| crate::html::decode_entities(n.trim()))
                .filter(|n| !n.is_empty()),
            version: self.version,
            edited_id: self.skypeeditedid.filter(|e| !e.trim().is_empty()),
            edit_ms: properties
                .edittime
                .as_deref()
                .and_then(timefmt::parse_time_ms),
            delete_ms: properties
                .deletetime
                .as_deref()
                .and_then(timefmt::parse_time_ms),
            reactions,
            files,
        })
    }
}

/// The remote id of a sent message: `OriginalArrivalTime` of the answer
/// (a number or a string; any case), else the last segment of the
/// `Location` header.
pub(crate) fn sent_message_id(body: &[u8], location: Option<&str>) -> Option<String> {
    let from_body = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| match value {
            Value::Object(object) => object
                .into_iter()
                .find(|(key, _)| key.eq_ignore_ascii_case("OriginalArrivalTime"))
                .and_then(|(_, value)| scalar_text(value)),
            _ => None,
        })
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty() && id != "0");
    from_body.or_else(|| location.and_then(ids::last_segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> Msg {
        serde_json::from_str::<RawMessage>(json)
            .unwrap()
            .into_msg()
            .unwrap()
    }

    #[test]
    fn read_markers_parse_from_the_list_and_the_thread_and_never_read_is_none() {
        assert_eq!(
            horizon_message("1715842512004;1715842513000;1715842512004"),
            Some(("1715842512004".to_owned(), 1_715_842_513_000))
        );
        assert_eq!(horizon_message("0;0;0"), None);
        assert_eq!(horizon_message(""), None);
        assert_eq!(horizon_message("17;x"), Some(("17".to_owned(), 0)));

        let page: ConversationPage = serde_json::from_str(
            r#"{"conversations":[
                {"id":"19:a@thread.v2","properties":{"consumptionhorizon":"17;18;17"}},
                {"id":"19:b@thread.v2","properties":{"consumptionhorizon":"0;0;0"}},
                {"id":"19:c@thread.v2","properties":null}]}"#,
        )
        .unwrap();
        let reads: Vec<_> = page
            .into_parts()
            .0
            .into_iter()
            .map(|c| c.own_read)
            .collect();
        assert_eq!(reads, [Some("17".to_owned()), None, None]);

        let thread: HorizonPage = serde_json::from_str(
            r#"{"consumptionhorizons":[
                {"id":"8:live:bob","consumptionhorizon":"17;18;17","messageVisibilityTime":1},
                {"id":"https://x/v1/users/ME/contacts/8:live:carol","consumptionhorizon":"16;19;0"},
                {"id":"8:live:dan","consumptionhorizon":"0;0;0"},
                {"consumptionhorizon":"15;1;1"},
                "junk"]}"#,
        )
        .unwrap();
        assert_eq!(
            thread.into_reads(),
            [
                ("8:live:bob".to_owned(), Some(("17".to_owned(), 18))),
                ("8:live:carol".to_owned(), Some(("16".to_owned(), 19))),
                ("8:live:dan".to_owned(), None),
            ]
        );
    }

    #[test]
    fn a_legacy_skype_message_parses() {
        let m = message(
            r#"{"id":"1715138396357","clientmessageid":"17555921056000866618","type":"Message","messagetype":"RichText",
             "contenttype":"text","content":"ya i got ","imdisplayname":"hasan fakhra",
             "from":"https://db4-client-s.gateway.messenger.live.com/v1/users/ME/contacts/8:live:20a002c57bc1f838",
             "composetime":"2018-03-09T13:54:59.360Z","originalarrivaltime":"2018-03-09T13:54:59.360Z",
             "version":"1520603700830","properties":{}}"#,
        );
        assert_eq!(m.id, "1715138396357");
        assert_eq!(m.sender.as_deref(), Some("8:live:20a002c57bc1f838"));
        assert_eq!(m.sender_name.as_deref(), Some("hasan fakhra"));
        assert_eq!(m.time_ms, 1_520_603_699_360);
        assert_eq!(m.client_message_id.as_deref(), Some("17555921056000866618"));
        assert_eq!(m.sequence_id, None);
        assert_eq!(m.content, "ya i got ");
    }

    #[test]
    fn ids_times_and_sequence_ids_come_as_numbers_or_strings() {
        let m = message(
            r#"{"id":1715842512004,"sequenceId":2,"clientmessageid":1234567890123456789,
                "originalarrivaltime":"2026-02-08T07:48:12.8740000Z","content":"x","from":"8:live:a"}"#,
        );
        // A numeric id is its digits.
        assert_eq!(m.id, "1715842512004");
        assert_eq!(m.sequence_id, Some(2));
        assert_eq!(m.client_message_id.as_deref(), Some("1234567890123456789"));
        // Seven fractional digits.
        assert_eq!(m.time_ms, 1_770_536_892_874);
        let m = message(r#"{"id":"5","sequenceId":"1","content":"x"}"#);
        assert_eq!(m.sequence_id, Some(1));
        // No time at all: 0 (a small id is not a time).
        assert_eq!(m.time_ms, 0);
        // Without an arrival time, the compose time, else the id.
        let m = message(r#"{"id":"1715842512004","composetime":"1970-01-01T00:00:01Z"}"#);
        assert_eq!(m.time_ms, 1000);
        let m = message(r#"{"id":"1715842512004"}"#);
        assert_eq!(m.time_ms, 1_715_842_512_004);
    }

    #[test]
    fn from_is_a_url_or_an_object() {
        let m = message(
            r#"{"id":"1","from":{"id":"8:live:bob","displayName":"Bob"},"imdisplayname":"Robert"}"#,
        );
        assert_eq!(m.sender.as_deref(), Some("8:live:bob"));
        // The object's name comes first.
        assert_eq!(m.sender_name.as_deref(), Some("Bob"));
        let m = message(
            r#"{"id":"1","from":"https://msgapi.teams.live.com/v1/users/ME/contacts/8:live:bob"}"#,
        );
        assert_eq!(m.sender.as_deref(), Some("8:live:bob"));
        assert_eq!(m.sender_name, None);
        // Something else is no sender, not an error.
        let m = message(r#"{"id":"1","from":42}"#);
        assert_eq!(m.sender, None);
    }

    #[test]
    fn content_is_a_string_an_object_or_a_number() {
        assert_eq!(
            message(r#"{"id":"1","content":"a &amp; b"}"#).content,
            "a &amp; b"
        );
        assert_eq!(
            message(r#"{"id":"1","content":{"text":"hi"}}"#).content,
            "hi"
        );
        assert_eq!(message(r#"{"id":"1","content":42}"#).content, "42");
        assert_eq!(message(r#"{"id":"1","content":null}"#).content, "");
    }

    #[test]
    fn edits_deletions_reactions_and_files_come_from_properties() {
        let m = message(
            r#"{"id":"10","skypeeditedid":"10","properties":{
                "edittime":"1715842600000","deletetime":1715842700000,
                "emotions":[{"key":"like","users":[{"mri":"8:live:a","time":1700000000000},{"mri":"8:live:b","time":"1700000000001","value":"x"}]},
                            {"key":"heart","users":"bogus"}, 7],
                "files":"[{\"fileName\":\"cat.png\",\"fileInfo\":{\"itemId\":\"i\",\"shareUrl\":\"https://s/1\",\"fileUrl\":\"https://f/cat.png\"},\"fileType\":\"png\"}]"}}"#,
        );
        assert_eq!(m.edited_id.as_deref(), Some("10"));
        assert_eq!(m.edit_ms, Some(1_715_842_600_000));
        assert_eq!(m.delete_ms, Some(1_715_842_700_000));
        // Times as numbers and strings; malformed entries are skipped.
        assert_eq!(
            m.reactions,
            vec![
                ReactionEntry {
                    key: "like".into(),
                    user: "8:live:a".into(),
                    time_ms: Some(1_700_000_000_000)
                },
                ReactionEntry {
                    key: "like".into(),
                    user: "8:live:b".into(),
                    time_ms: Some(1_700_000_000_001)
                },
            ]
        );
        // Files from a JSON string; the file URL first.
        assert_eq!(
            m.files,
            vec![FileRef {
                name: "cat.png".into(),
                url: "https://f/cat.png".into(),
                file_type: Some("png".into())
            }]
        );
        // Emotions given as a JSON string, and files as an array.
        let m = message(
            r#"{"id":"11","properties":{"emotions":"[{\"key\":\"laugh\",\"users\":[{\"mri\":\"8:live:c\",\"time\":\"5\"}]}]",
                "files":[{"fileName":"a.pdf","fileInfo":{"shareUrl":"https://s/a"}}]}}"#,
        );
        assert_eq!(m.reactions.len(), 1);
        assert_eq!(m.reactions[0].key, "laugh");
        assert_eq!(m.files[0].url, "https://s/a");
        // A full file entry, with `title`, `objectUrl` and more beside
        // `fileName` (as the Teams web app writes them).
        let m = message(
            r#"{"id":"13","properties":{"files":"[{\"@type\":\"http://schema.skype.com/File\",\"title\":\"doc.pdf\",\"fileName\":\"doc.pdf\",\"objectUrl\":\"https://o/1\",\"type\":\"pdf\",\"fileType\":\"pdf\",\"fileInfo\":{\"itemId\":\"1\",\"fileUrl\":\"https://f/1\",\"shareUrl\":\"https://f/1?share=1\"}}]"}}"#,
        );
        assert_eq!(m.files.len(), 1);
        assert_eq!(m.files[0].name, "doc.pdf");
        assert_eq!(m.files[0].url, "https://f/1");
        // Camel-case and lower-case spellings side by side do not break a
        // message.
        let m = message(
            r#"{"id":"14","clientmessageid":"1","clientMessageId":"2","messagetype":"Text","messageType":"Text"}"#,
        );
        assert_eq!(m.client_message_id.as_deref(), Some("1"));
        // Properties of the wrong type are ignored.
        let m = message(r#"{"id":"12","properties":"nope"}"#);
        assert!(m.reactions.is_empty() && m.files.is_empty() && m.edit_ms.is_none());
    }

    #[test]
    fn a_message_page_skips_bad_items_and_gives_the_next_link() {
        let page: MessagePage = serde_json::from_str(
            r#"{"messages":[{"id":"2","content":"b"},null,"junk",{"content":"no id"},{"id":"1","content":"a"}],
                "_metadata":{"backwardLink":"https://x/next","syncState":"s"}}"#,
        )
        .unwrap();
        let parts = page.into_parts();
        // Only the items with an id.
        assert_eq!(
            parts
                .messages
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            ["2", "1"]
        );
        assert_eq!(parts.backward_link.as_deref(), Some("https://x/next"));
        assert_eq!(parts.sync_state.as_deref(), Some("s"));
        // An empty answer is an empty page.
        let parts = serde_json::from_str::<MessagePage>("{}")
            .unwrap()
            .into_parts();
        assert!(
            parts.messages.is_empty()
                && parts.backward_link.is_none()
                && parts.sync_state.is_none()
        );
    }

    #[test]
    fn conversations_give_thread_ids_kinds_and_markers() {
        let page: ConversationPage = serde_json::from_str(
            r#"{"conversations":[
                {"id":"19:a@thread.v2","version":1464030261015,
                 "threadProperties":{"topic":"Team &amp; friends","productThreadType":"Chat","membercount":"3","version":"7"},
                 "lastMessage":{"id":"100","version":"100","content":"x"}},
                {"id":"19:uni01_b@thread.v2","threadProperties":{"uniquerosterthread":"true","originalThreadId":"19:orig@thread.v2"}},
                {"id":"8:live:bob","threadProperties":null},
                {"type":"Conversation"},
                42],
              "_metadata":{"totalCount":3,"backwardLink":""}}"#,
        )
        .unwrap();
        let (chats, link) = page.into_parts();
        // An empty link is no link.
        assert_eq!(link, None);
        assert_eq!(chats.len(), 3);
        let group = &chats[0];
        assert_eq!(group.thread_id, "19:a@thread.v2");
        assert!(!group.direct);
        assert_eq!(group.topic.as_deref(), Some("Team & friends"));
        assert_eq!(
            group.last_message.as_ref().map(|m| m.id.as_str()),
            Some("100")
        );
        // The original thread id is the chat id; the conversation id stays for URLs.
        let dm = &chats[1];
        assert_eq!(dm.thread_id, "19:orig@thread.v2");
        assert_eq!(dm.conversation_id, "19:uni01_b@thread.v2");
        assert!(dm.direct);
        // A legacy 1:1 without thread properties is direct.
        assert!(chats[2].direct);
        // Markers differ when the last message does.
        assert_ne!(chats[0].marker, chats[1].marker);
    }

    #[test]
    fn thread_members_come_with_ids_and_names() {
        let info: ThreadInfo = serde_json::from_str(
            r#"{"id":"19:a@thread.v2","members":[
                {"id":"8:live:a","role":"Admin","friendlyName":"Alice"},
                {"userLink":"https://x/v1/users/ME/contacts/8:live:b","role":"User"},
                {"role":"User"}]}"#,
        )
        .unwrap();
        assert_eq!(
            info.into_members(),
            vec![
                Member {
                    id: "8:live:a".into(),
                    name: Some("Alice".into())
                },
                Member {
                    id: "8:live:b".into(),
                    name: None
                },
            ]
        );
    }

    #[test]
    fn the_sent_message_id_comes_from_the_answer_or_location() {
        // A number.
        assert_eq!(
            sent_message_id(br#"{"OriginalArrivalTime":1715842512004}"#, None).as_deref(),
            Some("1715842512004")
        );
        // A string, in another case.
        assert_eq!(
            sent_message_id(br#"{"originalarrivaltime":"1715842512005"}"#, None).as_deref(),
            Some("1715842512005")
        );
        // An empty body: the Location header's last segment.
        assert_eq!(
            sent_message_id(
                b"",
                Some("https://x/v1/users/ME/conversations/19:a/messages/1715842512006")
            )
            .as_deref(),
            Some("1715842512006")
        );
        assert_eq!(sent_message_id(b"{}", None), None);
    }
}
