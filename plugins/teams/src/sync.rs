//! What a poll makes of Teams data, without any host call: the per-chat
//! state kept in KV (the cursor, the equivalent of the source's
//! `teams_thread_state`), which messages are new, and the remote events
//! they become: messages, files, edits, deletions and reactions, and the
//! chat resyncs of discovery.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use weft_sdk::events::{
    self, Attachment, ChatKind, ChatMember, ChatResync, Delete, Edit, EventSender, HistoryItem,
    MediaKind, MediaMessage, MediaSource, MediaUrl, Message, Reaction, ReadReceipt, RemoteEvent,
};

use crate::html;
use crate::ids;
use crate::model::{Chat, Member, Msg};

/// At most this many messages' reactions are remembered per chat (to see
/// removals).
const MAX_REACTION_SNAPSHOTS: usize = 64;
/// At most this many recent `clientmessageid`s per chat (to find the
/// target of a legacy edit by its `skypeeditedid`).
const MAX_RECENT_IDS: usize = 16;
/// At most this many edits and deletions made from Matrix are remembered
/// per chat.
const MAX_OWN_CHANGES: usize = 16;

/// Where a chat's stream was read up to: the last message bridged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// Its `sequenceId`, if the service gives them.
    #[serde(default)]
    pub(crate) last_sequence_id: Option<u64>,
    /// Its arrival time, in Unix milliseconds (the next fetch's
    /// `startTime`).
    #[serde(default)]
    pub(crate) last_message_ts: u64,
    /// Its id. `None` with a time only: every message from that time on
    /// is new.
    #[serde(default)]
    pub(crate) last_message_id: Option<String>,
}

/// Compares message ids: numerically when both are numbers (they are
/// arrival times in practice), else as text.
fn compare_ids(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u128>(), b.parse::<u128>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

impl Cursor {
    /// A cursor at message `m`: only later messages are new.
    pub(crate) fn at(m: &Msg) -> Self {
        Self {
            last_sequence_id: m.sequence_id,
            last_message_ts: m.time_ms,
            last_message_id: Some(m.id.clone()),
        }
    }

    /// A cursor at a time: messages from then on are new.
    pub(crate) fn from_time(ms: u64) -> Self {
        Self {
            last_sequence_id: None,
            last_message_ts: ms,
            last_message_id: None,
        }
    }

    /// Whether `m` comes after the cursor: by `sequenceId` when both have
    /// one, else by arrival time and then id.
    pub(crate) fn is_before(&self, m: &Msg) -> bool {
        if let (Some(seq), Some(last)) = (m.sequence_id, self.last_sequence_id) {
            return seq > last;
        }
        match &self.last_message_id {
            None => m.time_ms >= self.last_message_ts,
            Some(last_id) => match m.time_ms.cmp(&self.last_message_ts) {
                std::cmp::Ordering::Equal => compare_ids(&m.id, last_id).is_gt(),
                other => other.is_gt(),
            },
        }
    }

    /// Moves the cursor to `m`, which comes after it.
    pub(crate) fn advance(&mut self, m: &Msg) {
        self.last_sequence_id = match (self.last_sequence_id, m.sequence_id) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => b.or(a),
        };
        self.last_message_ts = self.last_message_ts.max(m.time_ms);
        self.last_message_id = Some(m.id.clone());
    }
}

/// Sorts messages oldest first (the API gives them newest first): by
/// `sequenceId` when every one has it, else by arrival time and id; drops
/// repeats.
pub(crate) fn oldest_first(mut messages: Vec<Msg>) -> Vec<Msg> {
    if messages.iter().all(|m| m.sequence_id.is_some()) {
        messages.sort_by(|a, b| {
            a.sequence_id
                .cmp(&b.sequence_id)
                .then_with(|| compare_ids(&a.id, &b.id))
        });
    } else {
        messages.sort_by(|a, b| {
            a.time_ms
                .cmp(&b.time_ms)
                .then_with(|| compare_ids(&a.id, &b.id))
        });
    }
    let mut seen = BTreeSet::new();
    messages.retain(|m| seen.insert(m.id.clone()));
    messages
}

/// What the connector keeps per chat in KV (`thread/<thread id>`): the
/// source's `teams_thread_state`, and what it needs to see edits,
/// deletions and reactions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ThreadState {
    /// The conversation id for the message URLs, when it is not the
    /// thread id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) conversation_id: Option<String>,
    /// The last message bridged.
    #[serde(default, flatten)]
    pub(crate) cursor: Cursor,
    /// Edits and deletions up to this time (Unix milliseconds) were
    /// bridged.
    #[serde(default)]
    pub(crate) last_change_ms: u64,
    /// The `syncState` link of the last fetch: what arrived or changed
    /// since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sync_state: Option<String>,
    /// The reactions last seen on recent messages: message id → sorted
    /// `key\u{1}user` entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) reactions: BTreeMap<String, Vec<String>>,
    /// Recent `(clientmessageid, id)` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) recent: Vec<(String, String)>,
    /// Messages edited or deleted from Matrix whose echo is still to
    /// come.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) own_changes: Vec<String>,
}

/// What the connector keeps per chat in its chat index (KV `chats`, one
/// record for all chats, read once per poll): whether the chat changed
/// since it was last fetched and resynced, and its backoff.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChatMark {
    /// The chat's marker when it was last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) marker: Option<String>,
    /// The chat's shape when it was last resynced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shape: Option<String>,
    /// Failed fetches in a row.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub(crate) failures: u32,
    /// Not fetched again before this time (Unix milliseconds).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub(crate) retry_at_ms: u64,
    /// The message the login had read up to at the last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) own_read: Option<String>,
    /// After the login sends, the others' read markers are looked at
    /// until they have all read it, or until this time (0: not looked at).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub(crate) reads_until_ms: u64,
    /// The message sent that they are to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reads_of: Option<String>,
    /// When the read markers were last looked at.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub(crate) reads_checked_ms: u64,
    /// The other members' read markers, while they are looked at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) read_by: BTreeMap<String, String>,
}

impl ChatMark {
    /// After the login sent `message`: look at who reads it for a while.
    pub(crate) fn watch_reads(&mut self, message: &str, now_ms: u64, window_ms: u64) {
        self.reads_until_ms = now_ms.saturating_add(window_ms);
        self.reads_of = Some(message.to_owned());
    }

    /// Stops looking at the others' read markers.
    fn stop_watching_reads(&mut self) {
        self.reads_until_ms = 0;
        self.reads_of = None;
        self.reads_checked_ms = 0;
        self.read_by.clear();
    }

    /// Whether the others' read markers are being watched; a watch whose
    /// window ran out ends here.
    pub(crate) fn watching_reads(&mut self, now_ms: u64) -> bool {
        if self.reads_until_ms != 0 && now_ms >= self.reads_until_ms {
            self.stop_watching_reads();
        }
        self.reads_until_ms != 0
    }

    /// Whether the chat's messages are all in: it was fetched at its
    /// current marker (receipts point at messages, which must come first).
    pub(crate) fn is_up_to_date(&self, chat: &Chat) -> bool {
        self.marker.as_deref() == Some(chat.marker.as_str())
    }
}

/// The login's own read marker moved (it read the chat on another
/// device): a receipt for its Matrix user. Nothing the first time a chat
/// is seen, or when the marker is the one it set from Matrix.
pub(crate) fn own_read_receipt(
    chat: &Chat,
    mark: &mut ChatMark,
    me: &str,
    now_ms: u64,
) -> Option<RemoteEvent> {
    let read = chat.own_read.as_ref()?;
    let previous = mark.own_read.replace(read.clone());
    if previous.is_none() || previous.as_ref() == Some(read) {
        return None;
    }
    Some(RemoteEvent::ReadReceipt(ReadReceipt {
        chat_id: chat.thread_id.clone(),
        sender: events::sender(events::remote_user(me, None), true),
        up_to: read.clone(),
        timestamp_ms: now_ms,
    }))
}

/// Receipts for the other members whose read markers moved, from
/// `reads` (member, and the message and time they read up to, if any).
/// Once they have all read the message the login sent, the markers are
/// no longer looked at.
pub(crate) fn member_read_receipts(
    chat_id: &str,
    reads: Vec<(String, Option<(String, u64)>)>,
    mark: &mut ChatMark,
    me: &str,
    now_ms: u64,
) -> Vec<RemoteEvent> {
    let sent = mark
        .reads_of
        .as_deref()
        .and_then(|id| id.parse::<u64>().ok());
    let mut others = 0;
    let mut all_read = true;
    let mut out = Vec::new();
    for (member, read) in reads {
        if ids::same_user(&member, me) {
            continue;
        }
        others += 1;
        let Some((message, time)) = read else {
            all_read = false;
            continue;
        };
        let read_sent = sent.is_some_and(|sent| message.parse::<u64>().is_ok_and(|m| m >= sent));
        all_read &= read_sent;
        if mark.read_by.get(&member) == Some(&message) {
            continue;
        }
        mark.read_by.insert(member.clone(), message.clone());
        out.push(RemoteEvent::ReadReceipt(ReadReceipt {
            chat_id: chat_id.to_owned(),
            sender: events::sender(events::remote_user(&member, None), false),
            up_to: message,
            timestamp_ms: if time > 0 { time } else { now_ms },
        }));
    }
    if others > 0 && all_read && sent.is_some() {
        mark.stop_watching_reads();
    }
    out
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl ThreadState {
    /// The state of a chat first seen now. `resume_from_ms`: when the
    /// login last looked at its chats, if it has before. A chat found on
    /// the login's first sync starts after its last message (its history
    /// comes through backfill); one that appears later starts from the
    /// last look, so nothing sent in between is missed.
    pub(crate) fn new_for(chat: &Chat, resume_from_ms: Option<u64>, now_ms: u64) -> Self {
        let cursor = match (resume_from_ms, &chat.last_message) {
            (Some(ms), _) => Cursor::from_time(ms),
            (None, Some(last)) => Cursor::at(last),
            (None, None) => Cursor::default(),
        };
        Self {
            conversation_id: (chat.conversation_id != chat.thread_id)
                .then(|| chat.conversation_id.clone()),
            cursor,
            last_change_ms: now_ms,
            ..Self::default()
        }
    }

    /// Remembers that `id` was edited or deleted from Matrix.
    pub(crate) fn remember_own_change(&mut self, id: &str) {
        if !self.own_changes.iter().any(|e| e == id) {
            self.own_changes.push(id.to_owned());
        }
        let excess = self.own_changes.len().saturating_sub(MAX_OWN_CHANGES);
        self.own_changes.drain(..excess);
    }

    /// Whether a change of `id` is the echo of one made from Matrix (it
    /// is then forgotten).
    fn take_own_change(&mut self, id: &str) -> bool {
        match self.own_changes.iter().position(|e| e == id) {
            Some(at) => {
                self.own_changes.remove(at);
                true
            }
            None => false,
        }
    }

    /// Records a reaction made from Matrix, so its echo is not bridged
    /// back (`added`), or its removal.
    pub(crate) fn record_own_reaction(
        &mut self,
        message_id: &str,
        key: &str,
        me: &str,
        added: bool,
    ) {
        let entry = reaction_entry(key, me);
        let snapshot = self.reactions.entry(message_id.to_owned()).or_default();
        snapshot.retain(|e| *e != entry);
        if added {
            snapshot.push(entry);
            snapshot.sort();
        }
        if snapshot.is_empty() {
            self.reactions.remove(message_id);
        }
        self.trim_reactions();
    }

    fn trim_reactions(&mut self) {
        while self.reactions.len() > MAX_REACTION_SNAPSHOTS {
            let oldest = self
                .reactions
                .keys()
                .min_by(|a, b| compare_ids(a, b))
                .cloned();
            match oldest {
                Some(oldest) => self.reactions.remove(&oldest),
                None => break,
            };
        }
    }

    fn remember_client_id(&mut self, m: &Msg) {
        if let Some(client_id) = &m.client_message_id {
            self.recent.push((client_id.clone(), m.id.clone()));
            let excess = self.recent.len().saturating_sub(MAX_RECENT_IDS);
            self.recent.drain(..excess);
        }
    }

    /// The message a legacy edit's `skypeeditedid` names: a recent
    /// message with that `clientmessageid`, else that id itself.
    fn resolve_edited(&self, edited: &str) -> String {
        self.recent
            .iter()
            .find(|(client_id, _)| client_id == edited)
            .map_or(edited, |(_, id)| id.as_str())
            .to_owned()
    }
}

fn reaction_entry(key: &str, user: &str) -> String {
    format!("{key}\u{1}{user}")
}

// ---------------------------------------------------------------------
// Reactions

/// Teams' reaction keys and the emoji Matrix shows for them.
const REACTIONS: [(&str, &str); 6] = [
    ("like", "👍"),
    ("heart", "❤️"),
    ("laugh", "😆"),
    ("surprised", "😮"),
    ("sad", "😢"),
    ("angry", "😡"),
];

/// The Matrix key of a Teams reaction: its emoji, or the key itself.
pub(crate) fn emoji_of(key: &str) -> String {
    REACTIONS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map_or(key, |(_, emoji)| emoji)
        .to_owned()
}

/// The Teams key of a Matrix reaction: the key of its emoji (with or
/// without the emoji variation selector), or the reaction itself.
pub(crate) fn key_of(reaction: &str) -> String {
    let bare = reaction.trim_end_matches('\u{fe0f}');
    REACTIONS
        .iter()
        .find(|(_, emoji)| emoji.trim_end_matches('\u{fe0f}') == bare)
        .map_or(reaction, |(key, _)| key)
        .to_owned()
}

// ---------------------------------------------------------------------
// Messages into events

/// A remote event, or a message with a file (queued separately).
#[derive(Debug, Clone)]
pub(crate) enum Out {
    /// An event.
    Event(RemoteEvent),
    /// A message with a file.
    Media(MediaMessage),
}

/// Who may receive the skypetoken with a file request: the chat service
/// and the auth service themselves, and Skype's media service.
#[derive(Debug, Clone, Default)]
pub(crate) struct MediaAuth {
    /// The origins (`scheme://host:port`) that may get it.
    pub(crate) origins: Vec<String>,
    /// The media service's origin, whose host may be `*.<domain>`
    /// (setting `media-url`).
    pub(crate) media_service: String,
    /// The skypetoken.
    pub(crate) skypetoken: String,
}

impl MediaAuth {
    /// The headers the host sends when it fetches `url`: the skypetoken
    /// for a trusted origin, nothing for anyone else.
    pub(crate) fn headers_for(&self, url: &str) -> Vec<(String, String)> {
        let Some(origin) = ids::origin(url) else {
            return Vec::new();
        };
        let media_service = ids::origin_matches(&self.media_service, &origin);
        if self.skypetoken.is_empty() || !(media_service || self.origins.contains(&origin)) {
            return Vec::new();
        }
        vec![
            (
                "authentication".into(),
                format!("skypetoken={}", self.skypetoken),
            ),
            (
                "authorization".into(),
                format!("skype_token {}", self.skypetoken),
            ),
        ]
    }
}

/// What the planner needs to know besides the messages.
pub(crate) struct Context<'a> {
    /// The chat (thread) id.
    pub(crate) chat_id: &'a str,
    /// The login's own MRI.
    pub(crate) me: &'a str,
    /// The `clientmessageid`s this login sent from Matrix.
    pub(crate) sent: &'a BTreeSet<String>,
    /// Who gets the skypetoken with file requests.
    pub(crate) media: &'a MediaAuth,
    /// Now, in Unix milliseconds.
    pub(crate) now_ms: u64,
}

/// Why a message is not bridged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Control, typing, thread activity, calls: never bridged.
    Quiet(String),
    /// A type this connector does not bridge.
    Unsupported(String),
    /// Nothing to show.
    Empty,
}

/// How a `messagetype` is bridged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Text,
    UriObject,
    Quiet,
    Unsupported,
}

fn category(message_type: &str) -> Category {
    let lower = message_type.trim().to_ascii_lowercase();
    match lower.as_str() {
        "" | "text" | "richtext" | "richtext/html" | "richtext/files" => Category::Text,
        "richtext/uriobject"
        | "richtext/media_genericfile"
        | "richtext/media_video"
        | "richtext/media_audiomsg"
        | "richtext/media_flikmsg" => Category::UriObject,
        _ if lower.starts_with("control/")
            || lower.starts_with("threadactivity/")
            || lower.starts_with("event/") =>
        {
            Category::Quiet
        }
        _ => Category::Unsupported,
    }
}

/// The plain and HTML bodies of a text message's content, and the
/// message it replies to.
fn text_bodies(content: &str) -> (String, Option<String>, Option<String>) {
    if !html::has_markup(content) {
        return (html::decode_entities(content).trim().to_owned(), None, None);
    }
    let (reply_to, content) = html::take_reply(content);
    let mut plain = html::to_plain(&content);
    if plain.is_empty()
        && let Some(src) = html::first_img_src(&content)
    {
        // A GIF or a sticker: its link, at least.
        plain = src;
    }
    (plain, Some(content.trim().to_owned()), reply_to)
}

fn media_kind_of_mime(mime: &str) -> MediaKind {
    match mime.split('/').next() {
        Some("image") => MediaKind::Image,
        Some("video") => MediaKind::Video,
        Some("audio") => MediaKind::Audio,
        _ => MediaKind::File,
    }
}

/// A MIME type from a file name's extension, else `fallback`.
fn mime_of(name: &str, fallback: &str) -> String {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let mime = match extension.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("bmp") => "image/bmp",
        Some("mp4") => "video/mp4",
        Some("mov") => "video/quicktime",
        Some("webm") => "video/webm",
        Some("mp3") => "audio/mpeg",
        Some("m4a") => "audio/mp4",
        Some("ogg") => "audio/ogg",
        Some("wav") => "audio/wav",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("zip") => "application/zip",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some("pptx") => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => fallback,
    };
    mime.to_owned()
}

/// The file URL of a media-service object: the object itself is its
/// metadata, the bytes are under a view.
fn object_view_url(uri: &str, kind: &str) -> String {
    if !uri.contains("/v1/objects/") || uri.contains("/views/") {
        return uri.to_owned();
    }
    let kind = kind.to_ascii_lowercase();
    let view = if kind.starts_with("picture") {
        "imgpsh_fullsize"
    } else if kind.starts_with("video") {
        "video"
    } else if kind.starts_with("audio") {
        "audio"
    } else {
        "original"
    };
    format!("{}/views/{view}", uri.trim_end_matches('/'))
}

impl Context<'_> {
    fn sender_of(&self, m: &Msg) -> Option<EventSender> {
        let id = m.sender.as_deref()?;
        Some(events::sender(
            events::remote_user(id, m.sender_name.clone()),
            ids::same_user(id, self.me),
        ))
    }

    fn media_message(
        &self,
        m: &Msg,
        sender: &EventSender,
        message_id: String,
        caption: Option<String>,
        reply_to: Option<String>,
        attachment: Attachment,
    ) -> Out {
        Out::Media(MediaMessage {
            chat_id: self.chat_id.to_owned(),
            message_id,
            sender: sender.clone(),
            timestamp_ms: m.time_ms,
            stream_order: stream_order(m),
            caption,
            reply_to,
            attachment,
        })
    }

    fn attachment(
        &self,
        url: &str,
        name: String,
        mime: String,
        kind: MediaKind,
        size: Option<u64>,
    ) -> Attachment {
        Attachment {
            file_name: name,
            mime_type: mime,
            kind,
            size,
            width: None,
            height: None,
            duration_ms: None,
            source: MediaSource::Url(MediaUrl {
                url: url.to_owned(),
                headers: self.media.headers_for(url),
            }),
        }
    }

    /// The events of a new message: a text message and/or its files.
    pub(crate) fn convert(&self, m: &Msg) -> Result<Vec<Out>, Skip> {
        let category = category(&m.message_type);
        match category {
            Category::Quiet => return Err(Skip::Quiet(m.message_type.clone())),
            Category::Unsupported => return Err(Skip::Unsupported(m.message_type.clone())),
            Category::Text | Category::UriObject => {}
        }
        let sender = self
            .sender_of(m)
            .ok_or_else(|| Skip::Unsupported(format!("{} without a sender", m.message_type)))?;
        if category == Category::UriObject
            && let Some(object) = html::parse_uri_object(&m.content)
        {
            let kind = object.kind.to_ascii_lowercase();
            let (fallback_mime, fallback_name) = if kind.starts_with("picture") {
                ("image/jpeg", "image.jpg")
            } else if kind.starts_with("video") {
                ("video/mp4", "video.mp4")
            } else if kind.starts_with("audio") {
                ("audio/mp4", "audio.m4a")
            } else {
                ("application/octet-stream", "file")
            };
            let name = object
                .name
                .clone()
                .unwrap_or_else(|| fallback_name.to_owned());
            let mime = mime_of(&name, fallback_mime);
            let url = object_view_url(&object.uri, &object.kind);
            let kind = media_kind_of_mime(&mime);
            let attachment = self.attachment(&url, name, mime, kind, object.size);
            return Ok(vec![self.media_message(
                m,
                &sender,
                m.id.clone(),
                None,
                None,
                attachment,
            )]);
        }
        let (plain, html, reply_to) = text_bodies(&m.content);
        let mut out = Vec::new();
        if !plain.is_empty() {
            out.push(Out::Event(RemoteEvent::Message(Message {
                chat_id: self.chat_id.to_owned(),
                message_id: m.id.clone(),
                sender: sender.clone(),
                timestamp_ms: m.time_ms,
                stream_order: stream_order(m),
                text: plain,
                html,
                reply_to: reply_to.clone(),
            })));
        }
        for (index, file) in m.files.iter().enumerate() {
            // The message's own id goes to its text, or else its first file.
            let message_id = if out.is_empty() {
                m.id.clone()
            } else {
                format!("{}#file{index}", m.id)
            };
            let fallback = file
                .file_type
                .as_deref()
                .map(|t| format!("x.{t}"))
                .map_or_else(
                    || "application/octet-stream".to_owned(),
                    |n| mime_of(&n, "application/octet-stream"),
                );
            let mime = mime_of(&file.name, &fallback);
            let kind = media_kind_of_mime(&mime);
            let attachment = self.attachment(&file.url, file.name.clone(), mime, kind, None);
            let reply = if message_id == m.id {
                reply_to.clone()
            } else {
                None
            };
            out.push(self.media_message(m, &sender, message_id, None, reply, attachment));
        }
        if out.is_empty() {
            return Err(Skip::Empty);
        }
        Ok(out)
    }

    /// The edit event of message `m` (edited in place) or of `target`
    /// (a legacy edit message).
    fn edit(&self, m: &Msg, target: &str, sender: EventSender, timestamp_ms: u64) -> Option<Out> {
        let (text, html, _) = text_bodies(&m.content);
        if text.is_empty() {
            return None;
        }
        Some(Out::Event(RemoteEvent::Edit(Edit {
            chat_id: self.chat_id.to_owned(),
            message_id: target.to_owned(),
            sender,
            timestamp_ms,
            text,
            html,
        })))
    }

    fn delete(&self, target: &str, sender: EventSender, timestamp_ms: u64) -> Out {
        Out::Event(RemoteEvent::Delete(Delete {
            chat_id: self.chat_id.to_owned(),
            message_id: target.to_owned(),
            sender,
            timestamp_ms,
        }))
    }

    /// The reaction events between the snapshot of `m`'s reactions and
    /// what it has now; updates the snapshot.
    fn reactions(&self, m: &Msg, state: &mut ThreadState, out: &mut Vec<Out>) {
        let previous = state.reactions.remove(&m.id).unwrap_or_default();
        let mut current: Vec<String> = m
            .reactions
            .iter()
            .map(|r| reaction_entry(&r.key, &r.user))
            .collect();
        current.sort();
        current.dedup();
        for reaction in &m.reactions {
            let entry = reaction_entry(&reaction.key, &reaction.user);
            if previous.contains(&entry) {
                continue;
            }
            let sender = events::sender(
                events::remote_user(&reaction.user, None),
                ids::same_user(&reaction.user, self.me),
            );
            out.push(self.reaction(
                m,
                sender,
                &reaction.key,
                reaction.time_ms.unwrap_or(self.now_ms),
                false,
            ));
        }
        for entry in previous.iter().filter(|e| !current.contains(e)) {
            let Some((key, user)) = entry.split_once('\u{1}') else {
                continue;
            };
            let sender = events::sender(
                events::remote_user(user, None),
                ids::same_user(user, self.me),
            );
            out.push(self.reaction(m, sender, key, self.now_ms, true));
        }
        if !current.is_empty() {
            state.reactions.insert(m.id.clone(), current);
            state.trim_reactions();
        }
    }

    fn reaction(
        &self,
        m: &Msg,
        sender: EventSender,
        key: &str,
        timestamp_ms: u64,
        removed: bool,
    ) -> Out {
        Out::Event(RemoteEvent::Reaction(Reaction {
            chat_id: self.chat_id.to_owned(),
            message_id: m.id.clone(),
            sender,
            key: emoji_of(key),
            timestamp_ms,
            removed,
        }))
    }

    /// The events of one poll of a chat: `messages` as fetched (any
    /// order), against the chat's `state`, which moves on. New messages
    /// become messages and files, except the echoes of what this login
    /// sent from Matrix; messages seen before give their edits,
    /// deletions and reaction changes since the last poll. Returns the
    /// events, oldest first, and what was skipped.
    pub(crate) fn plan(
        &self,
        state: &mut ThreadState,
        messages: Vec<Msg>,
    ) -> (Vec<Out>, Vec<Skip>) {
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        let changes_since = state.last_change_ms;
        let mut last_change = state.last_change_ms;
        for m in oldest_first(messages) {
            last_change = last_change
                .max(m.edit_ms.unwrap_or(0))
                .max(m.delete_ms.unwrap_or(0));
            if state.cursor.is_before(&m) {
                state.cursor.advance(&m);
                state.remember_client_id(&m);
                self.plan_new(state, &m, &mut out, &mut skipped);
            } else {
                self.plan_seen(state, &m, changes_since, &mut out);
            }
        }
        state.last_change_ms = last_change;
        (out, skipped)
    }

    fn plan_new(
        &self,
        state: &mut ThreadState,
        m: &Msg,
        out: &mut Vec<Out>,
        skipped: &mut Vec<Skip>,
    ) {
        if m.delete_ms.is_some() {
            // Deleted before it was bridged.
            return;
        }
        if let Some(edited) = legacy_edit_target(m) {
            // A legacy edit: a new message naming the one it replaces.
            if category(&m.message_type) != Category::Text {
                return;
            }
            let Some(sender) = self.sender_of(m) else {
                return;
            };
            let target = state.resolve_edited(edited);
            match self.edit(m, &target, sender.clone(), m.time_ms) {
                Some(edit) => out.push(edit),
                None => out.push(self.delete(&target, sender, m.time_ms)),
            }
            return;
        }
        let from_me = m
            .sender
            .as_deref()
            .is_some_and(|s| ids::same_user(s, self.me));
        if from_me
            && m.client_message_id
                .as_ref()
                .is_some_and(|c| self.sent.contains(c))
        {
            // The echo of a message sent from Matrix.
            return;
        }
        match self.convert(m) {
            Ok(events) => out.extend(events),
            Err(skip) => {
                skipped.push(skip);
                return;
            }
        }
        self.reactions(m, state, out);
    }

    fn plan_seen(&self, state: &mut ThreadState, m: &Msg, changes_since: u64, out: &mut Vec<Out>) {
        if category(&m.message_type) != Category::Text
            && category(&m.message_type) != Category::UriObject
        {
            return;
        }
        let Some(sender) = self.sender_of(m) else {
            return;
        };
        if let Some(deleted) = m.delete_ms.filter(|t| *t > changes_since) {
            state.reactions.remove(&m.id);
            // Unless it is the echo of a deletion made from Matrix.
            if !state.take_own_change(&m.id) {
                out.push(self.delete(&m.id, sender, deleted));
            }
            return;
        }
        if let Some(edited) = m.edit_ms.filter(|t| *t > changes_since) {
            if state.take_own_change(&m.id) {
                // The echo of an edit made from Matrix.
            } else if category(&m.message_type) == Category::Text
                && let Some(edit) = self.edit(m, &m.id, sender, edited)
            {
                out.push(edit);
            }
        }
        if m.delete_ms.is_none() {
            self.reactions(m, state, out);
        }
    }

    /// A new portal's history: the newest `limit` messages of `messages`,
    /// oldest first, as messages and files only.
    pub(crate) fn history(&self, messages: Vec<Msg>, limit: usize) -> Vec<HistoryItem> {
        let mut items: Vec<HistoryItem> = oldest_first(messages)
            .iter()
            .filter(|m| m.delete_ms.is_none())
            .filter(|m| legacy_edit_target(m).is_none())
            .filter_map(|m| self.convert(m).ok())
            .flatten()
            .filter_map(|out| match out {
                Out::Event(RemoteEvent::Message(message)) => Some(HistoryItem::Message(message)),
                Out::Media(media) => Some(HistoryItem::Media(media)),
                Out::Event(_) => None,
            })
            .collect();
        let excess = items.len().saturating_sub(limit);
        items.drain(..excess);
        items
    }
}

/// The message a legacy (Skype) edit replaces: a new message whose
/// `skypeeditedid` names another message. A message edited in place
/// carries its own id or `clientmessageid` there, and an `edittime`.
fn legacy_edit_target(m: &Msg) -> Option<&str> {
    m.edited_id.as_deref().filter(|edited| {
        m.edit_ms.is_none() && *edited != m.id && Some(*edited) != m.client_message_id.as_deref()
    })
}

/// The stream order of a message: its `sequenceId`, else its id when that
/// is a number.
fn stream_order(m: &Msg) -> Option<u64> {
    m.sequence_id.or_else(|| m.id.parse().ok())
}

// ---------------------------------------------------------------------
// Chats into resyncs

/// The chat resync of a discovered chat, for the login whose MRI is `me`.
/// It names the chat by its thread id and users by their MRIs only: the
/// host keys the portal by (thread id, this login), so nothing here can
/// point at another login's rooms. `members` come from the thread; when
/// they are unknown, the chat's id (a legacy 1:1's peer) and its last
/// message's sender stand in.
pub(crate) fn chat_resync(chat: &Chat, members: &[Member], me: &str) -> ChatResync {
    let last = chat.last_message.as_ref();
    let mut people: Vec<Member> = members.to_vec();
    if people.is_empty() {
        if chat.direct && chat.thread_id.starts_with("8:") {
            people.push(Member {
                id: chat.thread_id.clone(),
                name: None,
            });
        }
        if let Some(sender) = last.and_then(|m| m.sender.clone()) {
            people.push(Member {
                id: sender,
                name: None,
            });
        }
    }
    let mut seen = BTreeSet::new();
    people.retain(|p| seen.insert(p.id.to_ascii_lowercase()));
    // A name the thread does not give may be in the last message.
    for person in &mut people {
        if person.name.is_none()
            && let Some(m) = last.filter(|m| {
                m.sender
                    .as_deref()
                    .is_some_and(|s| ids::same_user(s, &person.id))
            })
        {
            person.name = m.sender_name.clone();
        }
    }
    let others: Vec<&Member> = people
        .iter()
        .filter(|p| !ids::same_user(&p.id, me))
        .collect();
    let name = chat.topic.clone().or_else(|| {
        if chat.thread_id == "48:notes" {
            Some("Notes".to_owned())
        } else if chat.direct {
            others.first().and_then(|p| p.name.clone())
        } else {
            let names: Vec<&str> = others.iter().filter_map(|p| p.name.as_deref()).collect();
            match names.len() {
                0 => None,
                1..=3 => Some(names.join(", ")),
                n => Some(format!("{} and {} others", names[..3].join(", "), n - 3)),
            }
        }
    });
    ChatResync {
        chat_id: chat.thread_id.clone(),
        name,
        topic: None,
        kind: if chat.direct {
            ChatKind::Direct
        } else {
            ChatKind::Group
        },
        members: people
            .into_iter()
            .map(|p| ChatMember {
                is_me: ids::same_user(&p.id, me),
                user: events::remote_user(p.id, p.name),
            })
            .collect(),
        create_portal: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileRef, ReactionEntry};

    const ME: &str = "8:live:alice";

    fn msg(id: &str, seq: Option<u64>, time_ms: u64, from: &str, content: &str) -> Msg {
        Msg {
            id: id.into(),
            sequence_id: seq,
            time_ms,
            client_message_id: None,
            message_type: "RichText/Html".into(),
            content: content.into(),
            sender: Some(from.into()),
            sender_name: Some(format!("name of {from}")),
            version: None,
            edited_id: None,
            edit_ms: None,
            delete_ms: None,
            reactions: Vec::new(),
            files: Vec::new(),
        }
    }

    fn with_context<T>(sent: &[&str], f: impl FnOnce(&Context<'_>) -> T) -> T {
        let sent: BTreeSet<String> = sent.iter().map(|s| (*s).to_owned()).collect();
        let media = MediaAuth {
            origins: vec!["https://msgapi.teams.live.com:443".into()],
            media_service: "https://*.asm.skype.com:443".into(),
            skypetoken: "skype-secret".into(),
        };
        let context = Context {
            chat_id: "19:a@thread.v2",
            me: ME,
            sent: &sent,
            media: &media,
            now_ms: 9_000_000_000_000,
        };
        f(&context)
    }

    fn texts(out: &[Out]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Out::Event(RemoteEvent::Message(m)) => format!("msg {} {}", m.message_id, m.text),
                Out::Event(RemoteEvent::Edit(e)) => format!("edit {} {}", e.message_id, e.text),
                Out::Event(RemoteEvent::Delete(d)) => format!("delete {}", d.message_id),
                Out::Event(RemoteEvent::Reaction(r)) => format!(
                    "react {} {} {} {}",
                    r.message_id,
                    r.sender.user.id,
                    r.key,
                    if r.removed { "removed" } else { "added" }
                ),
                Out::Media(m) => format!("file {} {}", m.message_id, m.attachment.file_name),
                Out::Event(_) => "other".into(),
            })
            .collect()
    }

    #[test]
    fn new_messages_are_bridged_oldest_first_and_move_the_cursor() {
        let mut state = ThreadState {
            cursor: Cursor::at(&msg("100", Some(1), 100, "8:live:bob", "")),
            ..ThreadState::default()
        };
        // Newest first, as the API gives them, with the cursor's message.
        let page = vec![
            msg("300", Some(3), 300, "8:live:bob", "<p>third</p>"),
            msg("200", Some(2), 200, "8:live:bob", "second"),
            msg("100", Some(1), 100, "8:live:bob", "first"),
        ];
        let (out, skipped) = with_context(&[], |c| c.plan(&mut state, page.clone()));
        assert_eq!(texts(&out), ["msg 200 second", "msg 300 third"]);
        assert!(skipped.is_empty());
        assert_eq!(
            state.cursor,
            Cursor {
                last_sequence_id: Some(3),
                last_message_ts: 300,
                last_message_id: Some("300".into())
            }
        );
        // The same page again (a restart, an overlapping fetch) gives nothing.
        let (out, _) = with_context(&[], |c| c.plan(&mut state, page));
        assert!(out.is_empty());
    }

    #[test]
    fn sequence_ids_order_messages_before_times_and_ids() {
        // Sequence ids as the order, though the times disagree.
        let ordered = oldest_first(vec![
            msg("b", Some(2), 100, "x", ""),
            msg("a", Some(1), 200, "x", ""),
            msg("a", Some(1), 200, "x", ""),
        ]);
        assert_eq!(
            ordered.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        // Without them: time, then the id as a number ("9" before "10").
        let ordered = oldest_first(vec![
            msg("10", None, 5, "x", ""),
            msg("9", None, 5, "x", ""),
            msg("1", None, 1, "x", ""),
        ]);
        assert_eq!(
            ordered.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["1", "9", "10"]
        );
    }

    #[test]
    fn the_cursor_compares_by_sequence_id_else_time_and_id() {
        let cursor = Cursor {
            last_sequence_id: Some(5),
            last_message_ts: 1000,
            last_message_id: Some("1000".into()),
        };
        // A higher sequence id is new even with an older time.
        assert!(cursor.is_before(&msg("900", Some(6), 900, "x", "")));
        assert!(!cursor.is_before(&msg("1100", Some(5), 1100, "x", "")));
        // Without a sequence id: the time, then the id.
        assert!(cursor.is_before(&msg("1001", None, 1001, "x", "")));
        assert!(cursor.is_before(&msg("1000b", None, 1000, "x", "")));
        assert!(!cursor.is_before(&msg("1000", None, 1000, "x", "")));
        assert!(!cursor.is_before(&msg("999", None, 999, "x", "")));
        // A cursor from a time takes everything from that time on.
        let from_time = Cursor::from_time(1000);
        assert!(from_time.is_before(&msg("1000", None, 1000, "x", "")));
        assert!(!from_time.is_before(&msg("999", None, 999, "x", "")));
        // The empty cursor takes everything.
        assert!(Cursor::default().is_before(&msg("1", None, 0, "x", "")));
    }

    #[test]
    fn the_cursor_survives_a_kv_round_trip() {
        let state = ThreadState {
            conversation_id: Some("19:conv@thread.v2".into()),
            cursor: Cursor {
                last_sequence_id: Some(7),
                last_message_ts: 123,
                last_message_id: Some("123".into()),
            },
            last_change_ms: 5,
            ..ThreadState::default()
        };
        let json = serde_json::to_string(&state).unwrap();
        // The issue's field names, flat.
        assert!(json.contains("\"last_sequence_id\":7"));
        assert!(json.contains("\"last_message_ts\":123"));
        assert!(json.contains("\"last_message_id\":\"123\""));
        assert_eq!(serde_json::from_str::<ThreadState>(&json).unwrap(), state);
        // An older, smaller record still loads.
        let old: ThreadState = serde_json::from_str(r#"{"last_message_ts":9}"#).unwrap();
        assert_eq!(old.cursor.last_message_ts, 9);
    }

    #[test]
    fn echoes_of_messages_sent_from_matrix_are_not_bridged_back() {
        let mut state = ThreadState::default();
        let mut own = msg("1", None, 1, ME, "hi");
        own.client_message_id = Some("1715842512004000000".into());
        let mut other_client = msg("2", None, 2, ME, "from my phone");
        other_client.client_message_id = Some("555".into());
        let (out, _) = with_context(&["1715842512004000000"], |c| {
            c.plan(&mut state, vec![own, other_client])
        });
        // Only the message sent from another Teams client, as the user's own.
        assert_eq!(texts(&out), ["msg 2 from my phone"]);
        let Out::Event(RemoteEvent::Message(m)) = &out[0] else {
            panic!()
        };
        assert!(m.sender.is_from_me);
        // The cursor still moved past the echo.
        assert_eq!(state.cursor.last_message_id.as_deref(), Some("2"));
    }

    #[test]
    fn control_activity_calls_and_unknown_types_are_skipped_without_stopping() {
        let mut state = ThreadState::default();
        let mut typing = msg("1", None, 1, "8:live:bob", "");
        typing.message_type = "Control/Typing".into();
        let mut added = msg("2", None, 2, "8:live:bob", "<addmember/>");
        added.message_type = "ThreadActivity/AddMember".into();
        let mut call = msg("3", None, 3, "8:live:bob", "<partlist/>");
        call.message_type = "Event/Call".into();
        let mut card = msg("4", None, 4, "8:live:bob", "card");
        card.message_type = "RichText/Media_Card".into();
        let after = msg("5", None, 5, "8:live:bob", "still here");
        let (out, skipped) = with_context(&[], |c| {
            c.plan(&mut state, vec![typing, added, call, card, after])
        });
        assert_eq!(texts(&out), ["msg 5 still here"]);
        assert_eq!(
            skipped,
            [
                Skip::Quiet("Control/Typing".into()),
                Skip::Quiet("ThreadActivity/AddMember".into()),
                Skip::Quiet("Event/Call".into()),
                Skip::Unsupported("RichText/Media_Card".into()),
            ]
        );
        assert_eq!(state.cursor.last_message_id.as_deref(), Some("5"));
    }

    #[test]
    fn text_messages_get_a_plain_and_an_html_body_and_replies() {
        let mut state = ThreadState::default();
        let mut plain = msg("1", None, 1, "8:live:bob", "fish &amp; chips");
        plain.message_type = "Text".into();
        let rich = msg(
            "2",
            None,
            2,
            "8:live:bob",
            "<blockquote itemtype=\"http://schema.skype.com/Reply\" itemid=\"1\"><p>fish</p></blockquote><p><b>yes</b> please</p>",
        );
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![plain, rich]));
        let Out::Event(RemoteEvent::Message(first)) = &out[0] else {
            panic!()
        };
        // Entities decoded; no HTML for plain text.
        assert_eq!(first.text, "fish & chips");
        assert_eq!(first.html, None);
        let Out::Event(RemoteEvent::Message(second)) = &out[1] else {
            panic!()
        };
        // The reply quote becomes a reply and leaves the body.
        assert_eq!(second.reply_to.as_deref(), Some("1"));
        assert_eq!(second.text, "yes please");
        assert_eq!(second.html.as_deref(), Some("<p><b>yes</b> please</p>"));
        assert_eq!(
            second.sender.user.display_name.as_deref(),
            Some("name of 8:live:bob")
        );
        assert!(!second.sender.is_from_me);
    }

    #[test]
    fn files_and_images_become_media_by_url_with_the_token_only_for_teams() {
        let mut state = ThreadState::default();
        let mut image = msg(
            "1",
            None,
            1,
            "8:live:bob",
            "<URIObject type=\"Picture.1\" uri=\"https://api.asm.skype.com/v1/objects/0-abc\"><OriginalName v=\"cat.png\"/><FileSize v=\"10\"/></URIObject>",
        );
        image.message_type = "RichText/UriObject".into();
        let mut files = msg("2", None, 2, "8:live:bob", "<p>see</p>");
        files.files = vec![
            FileRef {
                name: "a.pdf".into(),
                url: "https://msgapi.teams.live.com/files/a".into(),
                file_type: Some("pdf".into()),
            },
            FileRef {
                name: "b".into(),
                url: "https://onedrive.example/b".into(),
                file_type: Some("png".into()),
            },
        ];
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![image, files]));
        assert_eq!(
            texts(&out),
            [
                "file 1 cat.png",
                "msg 2 see",
                "file 2#file0 a.pdf",
                "file 2#file1 b"
            ]
        );
        let Out::Media(image) = &out[0] else { panic!() };
        assert_eq!(image.attachment.mime_type, "image/png");
        assert_eq!(image.attachment.kind, MediaKind::Image);
        assert_eq!(image.attachment.size, Some(10));
        let MediaSource::Url(source) = &image.attachment.source else {
            panic!()
        };
        // The media service's bytes are under a view, fetched with the token.
        assert_eq!(
            source.url,
            "https://api.asm.skype.com/v1/objects/0-abc/views/imgpsh_fullsize"
        );
        assert!(
            source
                .headers
                .iter()
                .any(|(n, v)| n == "authorization" && v == "skype_token skype-secret")
        );
        // The chat service's own file gets the token; a third party's does not.
        let Out::Media(on_teams) = &out[2] else {
            panic!()
        };
        let MediaSource::Url(source) = &on_teams.attachment.source else {
            panic!()
        };
        assert!(!source.headers.is_empty());
        assert_eq!(on_teams.attachment.mime_type, "application/pdf");
        let Out::Media(elsewhere) = &out[3] else {
            panic!()
        };
        let MediaSource::Url(source) = &elsewhere.attachment.source else {
            panic!()
        };
        assert!(source.headers.is_empty());
        // Its type from `fileType`.
        assert_eq!(elsewhere.attachment.mime_type, "image/png");
    }

    #[test]
    fn in_place_edits_and_deletions_of_seen_messages_are_bridged_once() {
        let mut state = ThreadState {
            cursor: Cursor::at(&msg("2", None, 2, "x", "")),
            last_change_ms: 1000,
            ..ThreadState::default()
        };
        let mut edited = msg("1", None, 1, "8:live:bob", "<p>fixed</p>");
        edited.edit_ms = Some(2000);
        edited.edited_id = Some("1".into());
        let mut deleted = msg("2", None, 2, "8:live:bob", "");
        deleted.delete_ms = Some(2500);
        let (out, _) = with_context(&[], |c| {
            c.plan(&mut state, vec![edited.clone(), deleted.clone()])
        });
        assert_eq!(texts(&out), ["edit 1 fixed", "delete 2"]);
        assert_eq!(state.last_change_ms, 2500);
        // Seen again: nothing new.
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![edited, deleted]));
        assert!(out.is_empty());
    }

    #[test]
    fn a_message_edited_before_it_was_seen_is_bridged_as_it_is_now() {
        let mut state = ThreadState::default();
        // Edited in place: `skypeeditedid` is its own clientmessageid.
        let mut m = msg("7", None, 7, "8:live:bob", "<p>second try</p>");
        m.client_message_id = Some("4242".into());
        m.edited_id = Some("4242".into());
        m.edit_ms = Some(9);
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![m]));
        assert_eq!(texts(&out), ["msg 7 second try"]);
    }

    #[test]
    fn legacy_edit_messages_target_the_original() {
        let mut state = ThreadState::default();
        let mut original = msg("100", None, 100, "8:live:bob", "tpyo");
        original.client_message_id = Some("777".into());
        let mut edit = msg("101", None, 101, "8:live:bob", "typo");
        edit.edited_id = Some("777".into());
        let mut removal = msg("102", None, 102, "8:live:bob", "");
        removal.edited_id = Some("100".into());
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![original, edit, removal]));
        // The edit names the original by its id, found by clientmessageid;
        // an empty edit is a deletion.
        assert_eq!(texts(&out), ["msg 100 tpyo", "edit 100 typo", "delete 100"]);
    }

    #[test]
    fn the_echoes_of_edits_and_deletions_made_from_matrix_are_not_bridged_back() {
        let mut state = ThreadState {
            cursor: Cursor::at(&msg("5", None, 5, "x", "")),
            last_change_ms: 10,
            ..ThreadState::default()
        };
        state.remember_own_change("5");
        let mut echoed = msg("5", None, 5, ME, "new");
        echoed.edit_ms = Some(20);
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![echoed.clone()]));
        assert!(out.is_empty());
        assert!(state.own_changes.is_empty());
        // Likewise a deletion made from Matrix.
        state.remember_own_change("5");
        echoed.delete_ms = Some(30);
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![echoed]));
        assert!(out.is_empty());
        assert!(state.own_changes.is_empty());
    }

    #[test]
    fn reactions_are_added_and_removed_by_difference() {
        let mut state = ThreadState {
            cursor: Cursor::at(&msg("1", None, 1, "x", "")),
            ..ThreadState::default()
        };
        let mut m = msg("1", None, 1, "8:live:bob", "hi");
        m.reactions = vec![
            ReactionEntry {
                key: "like".into(),
                user: "8:live:bob".into(),
                time_ms: Some(50),
            },
            ReactionEntry {
                key: "heart".into(),
                user: ME.into(),
                time_ms: None,
            },
        ];
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![m.clone()]));
        assert_eq!(
            texts(&out),
            [
                "react 1 8:live:bob 👍 added",
                "react 1 8:live:alice ❤️ added"
            ]
        );
        // Unchanged: nothing.
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![m.clone()]));
        assert!(out.is_empty());
        // Bob takes his back.
        m.reactions.remove(0);
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![m]));
        assert_eq!(texts(&out), ["react 1 8:live:bob 👍 removed"]);
    }

    #[test]
    fn a_reaction_made_from_matrix_does_not_come_back() {
        let mut state = ThreadState {
            cursor: Cursor::at(&msg("1", None, 1, "x", "")),
            ..ThreadState::default()
        };
        state.record_own_reaction("1", &key_of("👍"), ME, true);
        let mut m = msg("1", None, 1, "8:live:bob", "hi");
        m.reactions = vec![ReactionEntry {
            key: "like".into(),
            user: ME.into(),
            time_ms: None,
        }];
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![m.clone()]));
        assert!(out.is_empty());
        // Removed from Matrix: its disappearance is not news either.
        state.record_own_reaction("1", "like", ME, false);
        m.reactions.clear();
        let (out, _) = with_context(&[], |c| c.plan(&mut state, vec![m]));
        assert!(out.is_empty());
    }

    #[test]
    fn reaction_keys_map_to_emoji_and_back() {
        assert_eq!(emoji_of("like"), "👍");
        assert_eq!(emoji_of("unknownkey"), "unknownkey");
        assert_eq!(key_of("👍"), "like");
        // With or without the variation selector.
        assert_eq!(key_of("❤"), "heart");
        assert_eq!(key_of("❤️"), "heart");
        assert_eq!(key_of("🦀"), "🦀");
    }

    #[test]
    fn history_is_the_newest_messages_oldest_first() {
        let messages = vec![
            msg("4", None, 4, "8:live:bob", "four"),
            msg("3", None, 3, "8:live:bob", "three"),
            msg("2", None, 2, "8:live:bob", "two"),
            msg("1", None, 1, "8:live:bob", "one"),
        ];
        let items = with_context(&[], |c| c.history(messages, 2));
        let ids: Vec<&str> = items
            .iter()
            .map(|i| match i {
                HistoryItem::Message(m) => m.message_id.as_str(),
                HistoryItem::Media(m) => m.message_id.as_str(),
            })
            .collect();
        assert_eq!(ids, ["3", "4"]);
    }

    #[test]
    fn the_own_read_marker_gives_a_receipt_only_when_it_moves_after_the_first_look() {
        let mut chat = chat("19:a@thread.v2", false, None);
        let mut mark = ChatMark::default();
        chat.own_read = Some("100".into());
        // First look: recorded, not news.
        assert!(own_read_receipt(&chat, &mut mark, ME, 5).is_none());
        assert!(own_read_receipt(&chat, &mut mark, ME, 6).is_none());
        chat.own_read = Some("200".into());
        let Some(RemoteEvent::ReadReceipt(receipt)) = own_read_receipt(&chat, &mut mark, ME, 7)
        else {
            panic!("a receipt");
        };
        assert_eq!(receipt.up_to, "200");
        assert!(receipt.sender.is_from_me);
        assert_eq!(receipt.chat_id, "19:a@thread.v2");
        // A marker set from Matrix is recorded as the mark's already.
        mark.own_read = Some("300".into());
        chat.own_read = Some("300".into());
        assert!(own_read_receipt(&chat, &mut mark, ME, 8).is_none());
    }

    #[test]
    fn members_reading_the_sent_message_give_receipts_once_and_end_the_watch() {
        let mut mark = ChatMark::default();
        mark.watch_reads("200", 1000, 600_000);
        assert!(mark.watching_reads(1000));
        let read = |who: &str, up_to: &str| (who.to_owned(), Some((up_to.to_owned(), 42)));
        let receipts = member_read_receipts(
            "19:a@thread.v2",
            vec![
                read(ME, "200"),
                read("8:live:bob", "200"),
                read("8:live:carol", "100"),
            ],
            &mut mark,
            ME,
            1000,
        );
        let readers: Vec<(String, String)> = receipts
            .iter()
            .map(|r| match r {
                RemoteEvent::ReadReceipt(r) => (r.sender.user.id.clone(), r.up_to.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            readers,
            [
                ("8:live:bob".to_owned(), "200".to_owned()),
                ("8:live:carol".to_owned(), "100".to_owned())
            ]
        );
        assert!(mark.reads_until_ms > 0, "carol has not read it yet");
        // Nobody has read anything yet: still watching.
        let mut fresh = ChatMark::default();
        fresh.watch_reads("200", 1000, 600_000);
        let unread = vec![("8:live:bob".to_owned(), None)];
        assert!(member_read_receipts("19:a@thread.v2", unread, &mut fresh, ME, 1000).is_empty());
        assert!(fresh.reads_until_ms > 0);
        // Bob's unchanged marker is not news; Carol catches up.
        let receipts = member_read_receipts(
            "19:a@thread.v2",
            vec![read("8:live:bob", "200"), read("8:live:carol", "200")],
            &mut mark,
            ME,
            31_000,
        );
        assert_eq!(receipts.len(), 1);
        assert_eq!(mark.reads_until_ms, 0, "everyone read it: the watch ends");
        assert!(mark.read_by.is_empty());
        assert!(!mark.watching_reads(62_000));
    }

    #[test]
    fn a_watch_for_reads_ends_when_its_window_does() {
        let mut mark = ChatMark::default();
        mark.watch_reads("200", 1000, 600_000);
        assert!(mark.watching_reads(1000));
        assert!(mark.watching_reads(600_999));
        assert!(!mark.watching_reads(601_000));
        assert_eq!(mark, ChatMark::default());
    }

    fn chat(thread_id: &str, direct: bool, topic: Option<&str>) -> Chat {
        Chat {
            conversation_id: thread_id.into(),
            thread_id: thread_id.into(),
            direct,
            topic: topic.map(str::to_owned),
            marker: "m".into(),
            shape: "s".into(),
            last_message: None,
            own_read: None,
        }
    }

    #[test]
    fn a_resync_names_the_thread_and_marks_only_this_login_as_me() {
        // One chat that two logins (alice and bob) are both in.
        let shared = chat("19:shared@thread.v2", false, Some("Both of us"));
        let members = vec![
            Member {
                id: "8:live:alice".into(),
                name: Some("Alice".into()),
            },
            Member {
                id: "8:live:bob".into(),
                name: Some("Bob".into()),
            },
        ];
        for me in ["8:live:alice", "8:live:bob"] {
            let resync = chat_resync(&shared, &members, me);
            // The portal is named by the thread id alone; the host adds the
            // receiver (this login).
            assert_eq!(resync.chat_id, "19:shared@thread.v2");
            assert!(resync.create_portal);
            // Exactly one member is this login; the other login is a remote
            // user like any other.
            let mine: Vec<&str> = resync
                .members
                .iter()
                .filter(|m| m.is_me)
                .map(|m| m.user.id.as_str())
                .collect();
            assert_eq!(mine, [me]);
            // No field of the event names the login id except as `is_me`.
            assert_eq!(resync.members.len(), 2);
        }
    }

    #[test]
    fn dms_are_named_after_the_other_member_and_groups_after_the_topic() {
        let members = vec![
            Member {
                id: ME.into(),
                name: Some("Alice".into()),
            },
            Member {
                id: "8:live:bob".into(),
                name: Some("Bob".into()),
            },
        ];
        let dm = chat_resync(&chat("19:uni01_x@thread.v2", true, None), &members, ME);
        assert_eq!(dm.kind, ChatKind::Direct);
        assert_eq!(dm.name.as_deref(), Some("Bob"));
        let group = chat_resync(&chat("19:g@thread.v2", false, Some("Plans")), &members, ME);
        assert_eq!(group.kind, ChatKind::Group);
        assert_eq!(group.name.as_deref(), Some("Plans"));
        // A group without a topic: its other members' names.
        let untitled = chat_resync(&chat("19:g@thread.v2", false, None), &members, ME);
        assert_eq!(untitled.name.as_deref(), Some("Bob"));
        // A legacy 1:1 with no members known: the peer is the chat id, named
        // from the last message.
        let mut legacy = chat("8:live:carol", true, None);
        legacy.last_message = Some(Msg {
            sender_name: Some("Carol".into()),
            ..msg("1", None, 1, "8:live:carol", "hi")
        });
        let resync = chat_resync(&legacy, &[], ME);
        assert_eq!(resync.members.len(), 1);
        assert_eq!(resync.members[0].user.id, "8:live:carol");
        assert_eq!(resync.name.as_deref(), Some("Carol"));
    }

    #[test]
    fn a_chat_found_later_resumes_from_the_last_look() {
        let mut c = chat("19:new@thread.v2", false, None);
        c.last_message = Some(msg("500", Some(9), 500, "8:live:bob", "x"));
        // On the login's first sync: after the last message (backfill has it).
        let first = ThreadState::new_for(&c, None, 7);
        assert_eq!(first.cursor, Cursor::at(c.last_message.as_ref().unwrap()));
        // Later: from the last look.
        let later = ThreadState::new_for(&c, Some(400), 7);
        assert_eq!(later.cursor, Cursor::from_time(400));
        // The conversation id is kept only when it differs.
        assert_eq!(first.conversation_id, None);
        c.conversation_id = "19:conv@thread.v2".into();
        assert_eq!(
            ThreadState::new_for(&c, None, 7).conversation_id.as_deref(),
            Some("19:conv@thread.v2")
        );
    }
}
