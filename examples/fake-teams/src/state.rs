//! The fake Teams' state: accounts, chats and their messages, skypetokens,
//! files, and the switches tests flip. The HTTP API and the test controls
//! both change it through the methods here, so they keep the same rules:
//! one clock for ids and versions, `clientmessageid` dedup, the echo bot.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::{Account, now, random_string};
use crate::wire;

/// How long a skypetoken lives unless a test says otherwise: about a day,
/// as the reference saw (§3).
pub(crate) const DEFAULT_SKYPETOKEN_LIFETIME: u64 = 86_400;

/// The newest requests kept for [`crate::FakeTeams::calls`]; a benchmark
/// makes millions, and only a test's last few matter.
const MAX_CALLS: usize = 10_000;

/// A Teams user: an identity-platform account with a Skype id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Profile {
    /// The name the test or seed gave (`alice`), which the demo pages take.
    pub(crate) handle: String,
    pub(crate) account: Account,
    /// `live:.cid.<16 hex>` or `live:<name>`.
    pub(crate) skype_id: String,
    /// Creation order: decides the shape variations of its answers.
    pub(crate) index: u64,
}

impl Profile {
    pub(crate) fn mri(&self) -> String {
        format!("8:{}", self.skype_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ChatKind {
    /// A consumer 1:1, `19:uni01_…@thread.v2`.
    Dm,
    /// A group chat, `19:…@thread.v2`.
    Group,
    /// A legacy 1:1 whose id is the peer's MRI, different for each side.
    LegacyDm,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Member {
    pub(crate) mri: String,
    /// `Admin` or `User`.
    pub(crate) role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Horizon {
    /// `<msgId>;<tsMs>;<clientmessageid>`.
    pub(crate) value: String,
    pub(crate) at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Chat {
    /// The chat's key in [`TeamsState::chats`]: its id for threads; for a
    /// legacy 1:1, `<first member>|<second member>`.
    pub(crate) key: String,
    pub(crate) kind: ChatKind,
    pub(crate) topic: Option<String>,
    pub(crate) members: Vec<Member>,
    pub(crate) created_ms: u64,
    /// Bumped by every change to a message, so a poller notices.
    pub(crate) version: u64,
    /// Creation order: decides the shape variations of the chat.
    pub(crate) index: u64,
    pub(crate) next_sequence: u64,
    /// Oldest first.
    pub(crate) messages: Vec<StoredMessage>,
    pub(crate) horizons: BTreeMap<String, Horizon>,
    /// The message changed last, and its version then.
    pub(crate) last_updated: Option<(u64, u64)>,
    /// `(sender, clientmessageid)` → message id, for dedup without a scan
    /// (a benchmark's chat grows long).
    #[serde(skip)]
    pub(crate) sent: BTreeMap<(String, String), u64>,
}

impl Chat {
    /// The conversation id as `viewer` sees it: a legacy 1:1 is named by
    /// the other side's MRI.
    pub(crate) fn id_for(&self, viewer: &str) -> String {
        match self.kind {
            ChatKind::LegacyDm => self
                .members
                .iter()
                .find(|m| m.mri != viewer)
                .map_or_else(|| viewer.to_owned(), |m| m.mri.clone()),
            ChatKind::Dm | ChatKind::Group => self.key.clone(),
        }
    }

    /// The id tests use: a legacy 1:1 as its first member sees it.
    pub(crate) fn public_id(&self) -> String {
        match self.members.first() {
            Some(first) => self.id_for(&first.mri),
            None => self.key.clone(),
        }
    }

    pub(crate) fn is_member(&self, mri: &str) -> bool {
        self.members.iter().any(|m| m.mri == mri)
    }

    /// Message `id`: ids come from one increasing clock, so the history
    /// is sorted by them.
    pub(crate) fn message(&self, id: u64) -> Option<&StoredMessage> {
        let index = self.messages.binary_search_by_key(&id, |m| m.id).ok()?;
        self.messages.get(index)
    }

    fn message_mut(&mut self, id: u64) -> Option<&mut StoredMessage> {
        let index = self.messages.binary_search_by_key(&id, |m| m.id).ok()?;
        self.messages.get_mut(index)
    }

    /// The messages that arrived at or after `start`, oldest first.
    pub(crate) fn messages_since(&self, start: u64) -> &[StoredMessage] {
        let first = self.messages.partition_point(|m| m.id < start);
        &self.messages[first..]
    }

    /// Rebuilds [`Self::sent`] (after loading a state file).
    pub(crate) fn index_sent(&mut self) {
        self.sent = self
            .messages
            .iter()
            .filter(|m| m.is_user_message())
            .map(|m| ((m.from.clone(), m.clientmessageid.clone()), m.id))
            .collect();
    }
}

/// How `content` is written in JSON (the field reports saw all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ContentForm {
    /// A string.
    Text,
    /// `{"text": …}`.
    Object,
    /// A JSON number (only for content that is one).
    Number,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Attachment {
    /// In `properties.files`, downloadable at `/files/<id>`.
    File(String),
    /// A `RichText/UriObject` picture, downloadable at `/asm/v1/objects/<id>/views/imgo`.
    Image(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EmotionUser {
    pub(crate) mri: String,
    /// Milliseconds, as a number or as a string.
    pub(crate) time: Value,
    pub(crate) value: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Emotion {
    pub(crate) key: String,
    pub(crate) users: Vec<EmotionUser>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredMessage {
    /// Also its arrival time in Unix milliseconds, as on real Teams.
    pub(crate) id: u64,
    pub(crate) sequence_id: u64,
    /// The sender's MRI (the thread's id for `ThreadActivity/*`).
    pub(crate) from: String,
    pub(crate) display_name: String,
    pub(crate) messagetype: String,
    pub(crate) contenttype: String,
    /// As sent (HTML for the rich types); empty once deleted.
    pub(crate) content: String,
    pub(crate) content_form: ContentForm,
    pub(crate) clientmessageid: String,
    pub(crate) compose_ms: u64,
    pub(crate) version: u64,
    pub(crate) edit_ms: Option<u64>,
    pub(crate) delete_ms: Option<u64>,
    /// `skypeeditedid`, once edited.
    pub(crate) edited_id: Option<String>,
    pub(crate) emotions: Vec<Emotion>,
    pub(crate) attachment: Option<Attachment>,
    /// Properties the sender posted (`mentions`, `files`, …).
    pub(crate) properties: Map<String, Value>,
    /// Creation order across the fake: decides the shape variations.
    pub(crate) shape: u64,
}

impl StoredMessage {
    /// Whether a person wrote it (not a control or thread event), which is
    /// what the echo bot answers and the tests' `messages` lists.
    pub(crate) fn is_user_message(&self) -> bool {
        !(self.messagetype.starts_with("Control/")
            || self.messagetype.starts_with("ThreadActivity/")
            || self.messagetype.starts_with("Event/"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SkypeToken {
    pub(crate) mri: String,
    pub(crate) expires_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredFile {
    pub(crate) name: String,
    pub(crate) mime_type: String,
    #[serde(with = "base64_bytes")]
    pub(crate) bytes: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A typing notification the API received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typing {
    /// Who typed.
    pub mri: String,
    /// `false` for `Control/ClearTyping`.
    pub typing: bool,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
}

/// One request the Teams side answered (not the identity platform's,
/// which [`crate::identity::MsIdentity::calls`] records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsCall {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, e.g. `/msgapi/v1/users/ME/conversations`.
    pub path: String,
    /// The status answered.
    pub status: u16,
}

/// Test switches: never saved.
#[derive(Default)]
pub(crate) struct Switches {
    /// Requests left to refuse with 429, and the `Retry-After` seconds.
    pub(crate) throttle: Option<(usize, u64)>,
    /// 429s answered: even ones say seconds, odd ones an HTTP date.
    pub(crate) throttled: u64,
    pub(crate) failing: BTreeMap<String, u16>,
    pub(crate) sends: BTreeMap<String, usize>,
    pub(crate) typing: BTreeMap<String, Vec<Typing>>,
    pub(crate) page_size: Option<usize>,
    pub(crate) calls: VecDeque<TeamsCall>,
}

fn default_lifetime() -> u64 {
    DEFAULT_SKYPETOKEN_LIFETIME
}

/// Everything but the identity platform's tokens.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct TeamsState {
    /// By MRI.
    pub(crate) profiles: BTreeMap<String, Profile>,
    /// By [`Chat::key`].
    pub(crate) chats: BTreeMap<String, Chat>,
    pub(crate) skypetokens: BTreeMap<String, SkypeToken>,
    pub(crate) files: BTreeMap<String, StoredFile>,
    /// MRIs that answer every message with `echo: <text>`.
    pub(crate) echo_bots: BTreeSet<String>,
    /// The last tick handed out: ids and versions are Unix milliseconds,
    /// made unique and increasing, and the state file keeps the last so a
    /// restart never hands one out twice.
    clock: u64,
    /// The last `clientmessageid` suffix made.
    client_ids: u64,
    messages_made: u64,
    chats_made: u64,
    profiles_made: u64,
    reactions_made: u64,
    #[serde(default = "default_lifetime")]
    pub(crate) skypetoken_lifetime: u64,
    #[serde(skip)]
    pub(crate) switches: Switches,
}

/// A message about to be stored.
pub(crate) struct Draft {
    pub(crate) messagetype: String,
    pub(crate) contenttype: Option<String>,
    pub(crate) content: String,
    pub(crate) content_form: ContentForm,
    pub(crate) clientmessageid: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) properties: Map<String, Value>,
    pub(crate) attachment: Option<Attachment>,
}

impl Draft {
    pub(crate) fn new(messagetype: &str, content: String) -> Self {
        Self {
            messagetype: messagetype.to_owned(),
            contenttype: None,
            content,
            content_form: ContentForm::Text,
            clientmessageid: None,
            display_name: None,
            properties: Map::new(),
            attachment: None,
        }
    }
}

/// Why the state refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoSuchMessage,
    NotYours,
    Deleted,
}

impl TeamsState {
    pub(crate) fn new() -> Self {
        Self {
            skypetoken_lifetime: DEFAULT_SKYPETOKEN_LIFETIME,
            ..Self::default()
        }
    }

    /// A unique, increasing Unix-milliseconds tick.
    pub(crate) fn tick(&mut self) -> u64 {
        self.clock = wire::now_ms().max(self.clock + 1);
        self.clock
    }

    /// A 19-digit, strictly increasing `clientmessageid` (UnixNano-like,
    /// as the Teams web app makes them).
    pub(crate) fn client_message_id(&mut self) -> String {
        let nanos = wire::now_ms().saturating_mul(1_000_000);
        self.client_ids = nanos.max(self.client_ids + 1);
        self.client_ids.to_string()
    }

    pub(crate) fn add_profile(&mut self, handle: &str, account: Account) -> Profile {
        let index = self.profiles_made;
        self.profiles_made += 1;
        let name: String = handle
            .split('@')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .collect::<String>()
            .to_ascii_lowercase();
        // Every other account has a Skype name, the rest only a CID (§5).
        let named = format!("live:{name}");
        let taken = |id: &str| self.profiles.values().any(|p| p.skype_id == id);
        let skype_id = if index % 2 == 1 && !name.is_empty() && !taken(&named) {
            named
        } else {
            loop {
                let id = format!("live:.cid.{:016x}", rand::rng().random::<u64>());
                if !taken(&id) {
                    break id;
                }
            }
        };
        let profile = Profile {
            handle: handle.to_owned(),
            account,
            skype_id,
            index,
        };
        self.profiles.insert(profile.mri(), profile.clone());
        profile
    }

    pub(crate) fn profile_by_handle(&self, handle: &str) -> Option<&Profile> {
        self.profiles
            .values()
            .find(|p| p.handle == handle || p.account.username == handle)
    }

    pub(crate) fn display_name(&self, mri: &str) -> String {
        self.profiles
            .get(mri)
            .map_or_else(|| mri.to_owned(), |p| p.account.name.clone())
    }

    /// Mints a skypetoken for `mri`: JWT-shaped, unsigned in substance
    /// (the fake checks its own table, not the signature), with the
    /// `skypeid` claim clients read (§3).
    pub(crate) fn issue_skypetoken(&mut self, profile: &Profile) -> (String, u64) {
        let now = now();
        let lifetime = self.skypetoken_lifetime;
        let token = wire::skypetoken_jwt(&profile.skype_id, now, now + lifetime);
        self.skypetokens.insert(
            token.clone(),
            SkypeToken {
                mri: profile.mri(),
                expires_at: now + lifetime,
            },
        );
        // Tokens long expired are forgotten now and then, so a long run
        // doesn't pile them up.
        if self.skypetokens.len().is_multiple_of(1024) {
            self.skypetokens
                .retain(|_, t| t.expires_at + DEFAULT_SKYPETOKEN_LIFETIME > now);
        }
        (token, lifetime)
    }

    /// Whose live skypetoken this is.
    pub(crate) fn caller(&self, token: &str) -> Option<String> {
        self.skypetokens
            .get(token)
            .filter(|t| t.expires_at > now())
            .map(|t| t.mri.clone())
    }

    pub(crate) fn expire_skypetokens(&mut self) {
        let past = now().saturating_sub(1);
        for token in self.skypetokens.values_mut() {
            token.expires_at = token.expires_at.min(past);
        }
    }

    fn new_chat(
        &mut self,
        key: String,
        kind: ChatKind,
        topic: Option<String>,
        members: Vec<Member>,
    ) {
        let now = self.tick();
        let index = self.chats_made;
        self.chats_made += 1;
        self.chats.insert(
            key.clone(),
            Chat {
                key,
                kind,
                topic,
                members,
                created_ms: now,
                version: now,
                index,
                next_sequence: 0,
                messages: Vec::new(),
                horizons: BTreeMap::new(),
                last_updated: None,
                sent: BTreeMap::new(),
            },
        );
    }

    /// A consumer 1:1 between `a` and `b` (the existing one if there is).
    pub(crate) fn dm(&mut self, a: &str, b: &str) -> String {
        if let Some(chat) = self.chats.values().find(|c| {
            c.kind == ChatKind::Dm && c.members.len() == 2 && c.is_member(a) && c.is_member(b)
        }) {
            return chat.key.clone();
        }
        let id = format!(
            "19:uni01_{}@thread.v2",
            random_string(52, b"abcdefghijklmnopqrstuvwxyz234567")
        );
        let members = [a, b]
            .into_iter()
            .map(|mri| Member {
                mri: mri.to_owned(),
                role: "Admin".to_owned(),
            })
            .collect();
        self.new_chat(id.clone(), ChatKind::Dm, None, members);
        id
    }

    /// A legacy 1:1 between `a` and `b`; returns its id as `a` sees it.
    pub(crate) fn legacy_dm(&mut self, a: &str, b: &str) -> String {
        let key = format!("{a}|{b}");
        if !self.chats.contains_key(&key) {
            let members = [a, b]
                .into_iter()
                .map(|mri| Member {
                    mri: mri.to_owned(),
                    role: "User".to_owned(),
                })
                .collect();
            self.new_chat(key, ChatKind::LegacyDm, None, members);
        }
        b.to_owned()
    }

    /// A group chat created by `members[0]`, with the thread events the
    /// Teams app leaves in its history.
    pub(crate) fn group(&mut self, topic: &str, members: &[String]) -> String {
        let id = format!("19:{}@thread.v2", random_string(32, b"0123456789abcdef"));
        let creator = members.first().cloned().unwrap_or_default();
        let list = members
            .iter()
            .enumerate()
            .map(|(i, mri)| Member {
                mri: mri.clone(),
                role: if i == 0 { "Admin" } else { "User" }.to_owned(),
            })
            .collect();
        let topic = (!topic.is_empty()).then(|| topic.to_owned());
        self.new_chat(id.clone(), ChatKind::Group, topic.clone(), list);
        let now = wire::now_ms();
        let targets: String = members
            .iter()
            .map(|mri| {
                format!(
                    "<target>{mri}</target><detailedtargetinfo><id>{mri}</id><friendlyName>{}</friendlyName></detailedtargetinfo>",
                    wire::escape(&self.display_name(mri))
                )
            })
            .collect();
        let add = format!(
            "<addmember><eventtime>{now}</eventtime><initiator>{creator}</initiator>{targets}</addmember>"
        );
        self.thread_event(&id, "ThreadActivity/AddMember", add);
        if let Some(topic) = topic {
            let update = format!(
                "<topicupdate><eventtime>{now}</eventtime><initiator>{creator}</initiator><value>{}</value></topicupdate>",
                wire::escape(&topic)
            );
            self.thread_event(&id, "ThreadActivity/TopicUpdate", update);
        }
        id
    }

    fn thread_event(&mut self, key: &str, messagetype: &str, content: String) {
        let mut draft = Draft::new(messagetype, content);
        draft.contenttype = Some("text".to_owned());
        draft.display_name = Some(String::new());
        self.store(key, key, draft);
    }

    /// The chat a test names: a thread id, or a legacy 1:1's id as its
    /// first member sees it (the first such chat).
    pub(crate) fn resolve(&self, id: &str) -> Option<String> {
        if self.chats.contains_key(id) {
            return Some(id.to_owned());
        }
        self.chats
            .values()
            .find(|c| c.kind == ChatKind::LegacyDm && c.public_id() == id)
            .map(|c| c.key.clone())
    }

    /// The chat `caller` names `id`, if they are in it.
    pub(crate) fn resolve_for(&self, caller: &str, id: &str) -> Option<String> {
        if let Some(chat) = self.chats.get(id) {
            return (chat.kind != ChatKind::LegacyDm && chat.is_member(caller))
                .then(|| chat.key.clone());
        }
        self.chats
            .values()
            .find(|c| c.kind == ChatKind::LegacyDm && c.is_member(caller) && c.id_for(caller) == id)
            .map(|c| c.key.clone())
    }

    /// Stores a message from `from` in chat `key` as it is; returns its id.
    pub(crate) fn store(&mut self, key: &str, from: &str, draft: Draft) -> u64 {
        let id = self.tick();
        let shape = self.messages_made;
        self.messages_made += 1;
        let clientmessageid = draft
            .clientmessageid
            .unwrap_or_else(|| self.client_message_id());
        let display_name = draft
            .display_name
            .unwrap_or_else(|| self.display_name(from));
        // Half the messages say `text`, half `Text` (§4.3, field reports).
        let contenttype = draft.contenttype.unwrap_or_else(|| {
            if shape.is_multiple_of(2) {
                "text"
            } else {
                "Text"
            }
            .to_owned()
        });
        let Some(chat) = self.chats.get_mut(key) else {
            return id;
        };
        chat.next_sequence += 1;
        let message = StoredMessage {
            id,
            sequence_id: chat.next_sequence,
            from: from.to_owned(),
            display_name,
            messagetype: draft.messagetype,
            contenttype,
            content: draft.content,
            content_form: draft.content_form,
            clientmessageid,
            compose_ms: id.saturating_sub(shape % 3 * 7),
            version: id,
            edit_ms: None,
            delete_ms: None,
            edited_id: None,
            emotions: Vec::new(),
            attachment: draft.attachment,
            properties: draft.properties,
            shape,
        };
        if message.is_user_message() {
            chat.sent
                .insert((message.from.clone(), message.clientmessageid.clone()), id);
        }
        chat.messages.push(message);
        chat.version = id;
        id
    }

    /// Posts a message as a person would, then lets the chat's echo bots
    /// answer it.
    pub(crate) fn post(&mut self, key: &str, from: &str, draft: Draft) -> u64 {
        let id = self.store(key, from, draft);
        self.echo(key, id);
        id
    }

    /// A message in the form the Teams app gives typed text, varied
    /// across the types and content shapes the reference lists.
    pub(crate) fn typed(&self, text: &str) -> Draft {
        let shape = self.messages_made;
        let escaped = wire::escape(text);
        let (messagetype, content) = match shape % 3 {
            0 => ("RichText/Html", format!("<p>{escaped}</p>")),
            1 => ("Text", escaped),
            _ => ("RichText", escaped),
        };
        let mut draft = Draft::new(messagetype, content);
        let numeric = !text.is_empty()
            && text.len() <= 15
            && text.bytes().all(|b| b.is_ascii_digit())
            && !text.starts_with('0');
        draft.content_form = if numeric && messagetype != "RichText/Html" {
            ContentForm::Number
        } else if messagetype == "Text" && shape % 4 == 1 {
            ContentForm::Object
        } else {
            ContentForm::Text
        };
        draft
    }

    /// The echo bots in chat `key` (other than the sender) answer message
    /// `id`: each shows typing (which stays in the history, as the
    /// reference warns), then says `echo: <text>`.
    fn echo(&mut self, key: &str, id: u64) {
        let Some(chat) = self.chats.get(key) else {
            return;
        };
        let Some(message) = chat.message(id) else {
            return;
        };
        if !message.is_user_message() || self.echo_bots.contains(&message.from) {
            return;
        }
        let text = match &message.attachment {
            Some(Attachment::File(file) | Attachment::Image(file)) => self
                .files
                .get(file)
                .map_or_else(String::new, |f| f.name.clone()),
            None => wire::plain_text(&message.content),
        };
        let bots: Vec<String> = chat
            .members
            .iter()
            .filter(|m| self.echo_bots.contains(&m.mri))
            .map(|m| m.mri.clone())
            .collect();
        for bot in bots {
            let mut typing = Draft::new("Control/Typing", String::new());
            typing.contenttype = Some("Application/Message".to_owned());
            self.store(key, &bot, typing);
            let answer = Draft::new(
                "RichText/Html",
                format!("<p>echo: {}</p>", wire::escape(&text)),
            );
            self.store(key, &bot, answer);
        }
    }

    /// The message `clientmessageid` that `from` already sent in `key`.
    pub(crate) fn sent_before(&self, key: &str, from: &str, clientmessageid: &str) -> Option<u64> {
        self.chats
            .get(key)?
            .sent
            .get(&(from.to_owned(), clientmessageid.to_owned()))
            .copied()
    }

    fn own_message(
        &mut self,
        key: &str,
        id: u64,
        by: Option<&str>,
    ) -> Result<&mut StoredMessage, Refusal> {
        let message = self
            .chats
            .get_mut(key)
            .and_then(|c| c.message_mut(id))
            .filter(|m| m.is_user_message())
            .ok_or(Refusal::NoSuchMessage)?;
        if by.is_some_and(|by| by != message.from) {
            return Err(Refusal::NotYours);
        }
        if message.delete_ms.is_some() {
            return Err(Refusal::Deleted);
        }
        Ok(message)
    }

    /// Notes that message `id` of `key` changed: a new version for it and
    /// the chat.
    fn touched(&mut self, key: &str, id: u64) {
        let tick = self.tick();
        if let Some(chat) = self.chats.get_mut(key) {
            chat.version = tick;
            chat.last_updated = Some((id, tick));
            if let Some(message) = chat.message_mut(id) {
                message.version = tick;
            }
        }
    }

    /// Replaces a message's content (as `by`, if given: only the sender
    /// may).
    pub(crate) fn edit(
        &mut self,
        key: &str,
        id: u64,
        by: Option<&str>,
        content: String,
        messagetype: Option<String>,
    ) -> Result<(), Refusal> {
        let now = wire::now_ms();
        let message = self.own_message(key, id, by)?;
        message.content = content;
        if message.content_form == ContentForm::Number && message.content.parse::<u64>().is_err() {
            message.content_form = ContentForm::Text;
        }
        if let Some(messagetype) = messagetype {
            message.messagetype = messagetype;
        }
        message.edit_ms = Some(now);
        message.edited_id = Some(message.clientmessageid.clone());
        self.touched(key, id);
        Ok(())
    }

    /// Deletes a message (as `by`, if given): its content is emptied and
    /// it gets a `deletetime`, but it stays in the history.
    pub(crate) fn delete(&mut self, key: &str, id: u64, by: Option<&str>) -> Result<(), Refusal> {
        let now = wire::now_ms();
        let message = self.own_message(key, id, by)?;
        message.content.clear();
        message.content_form = ContentForm::Text;
        message.attachment = None;
        message.properties.remove("files");
        message.delete_ms = Some(now);
        self.touched(key, id);
        Ok(())
    }

    /// Adds or (with `value` `None`) takes back `who`'s reaction `key` to
    /// a message. Adding twice keeps the first.
    pub(crate) fn react(
        &mut self,
        chat: &str,
        id: u64,
        who: &str,
        emotion: &str,
        value: Option<Value>,
    ) -> Result<(), Refusal> {
        let now = wire::now_ms();
        // Half the reactions carry their time as a number, half as a
        // string (field reports).
        let time = if self.reactions_made.is_multiple_of(2) {
            Value::from(now)
        } else {
            Value::from(now.to_string())
        };
        let message = self.own_message(chat, id, None)?;
        let index = message.emotions.iter().position(|e| e.key == emotion);
        match (value, index) {
            (Some(value), index) => {
                let index = index.unwrap_or_else(|| {
                    message.emotions.push(Emotion {
                        key: emotion.to_owned(),
                        users: Vec::new(),
                    });
                    message.emotions.len() - 1
                });
                let users = &mut message.emotions[index].users;
                if users.iter().any(|u| u.mri == who) {
                    return Ok(());
                }
                users.push(EmotionUser {
                    mri: who.to_owned(),
                    time,
                    value,
                });
                self.reactions_made += 1;
            }
            (None, Some(index)) => {
                let users = &mut message.emotions[index].users;
                let before = users.len();
                users.retain(|u| u.mri != who);
                if users.len() == before {
                    return Ok(());
                }
                if users.is_empty() {
                    message.emotions.remove(index);
                }
            }
            (None, None) => return Ok(()),
        }
        self.touched(chat, id);
        Ok(())
    }

    pub(crate) fn set_horizon(&mut self, key: &str, who: &str, value: String) {
        let at_ms = wire::now_ms();
        if let Some(chat) = self.chats.get_mut(key) {
            chat.horizons
                .insert(who.to_owned(), Horizon { value, at_ms });
        }
    }

    pub(crate) fn store_file(&mut self, name: &str, mime_type: &str, bytes: Vec<u8>) -> String {
        let id = loop {
            let id = format!(
                "0-weu-d{}-{}",
                rand::rng().random_range(1..10),
                random_string(32, b"0123456789abcdef")
            );
            if !self.files.contains_key(&id) {
                break id;
            }
        };
        self.files.insert(
            id.clone(),
            StoredFile {
                name: name.to_owned(),
                mime_type: mime_type.to_owned(),
                bytes,
            },
        );
        id
    }

    pub(crate) fn record(&mut self, call: TeamsCall) {
        let calls = &mut self.switches.calls;
        if calls.len() == MAX_CALLS {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    /// Whether the next request is throttled; if so, its `Retry-After`
    /// value (seconds or, every other time, an HTTP date).
    pub(crate) fn throttle(&mut self) -> Option<String> {
        let (left, secs) = self.switches.throttle?;
        self.switches.throttle = (left > 1).then_some((left - 1, secs));
        let alternate = self.switches.throttled % 2 == 1;
        self.switches.throttled += 1;
        Some(if alternate {
            // An HTTP date has whole seconds: round up so a client that
            // waits until then waits at least `secs`.
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now() + secs + 1);
            httpdate::fmt_http_date(at)
        } else {
            secs.to_string()
        })
    }
}
