//! The echo connector: the example weft plugin.
//!
//! It bridges the echo chat service (`examples/echo-service`). Each login's
//! instance polls the service's activity log on a host timer, keeps its
//! cursor in KV, and queues remote events: messages, files (fetched by the
//! host from the service), edits, deletions, reactions, typing and read
//! markers. What happens on Matrix goes back the same ways, and a new
//! portal gets the chat's recent history. Everything it keeps lives in KV
//! or in the login's metadata, so the host can replace the instance at any
//! time without losing its place.
//!
//! Copy this crate to start a connector: the manifest (`weft.toml`) says
//! what the plugin asks for, `Cargo.toml`'s `[package.metadata.weft]` lets
//! `cargo weft build` find it, and this file implements the two traits.

mod api;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_sdk::events::{
    self, Attachment, BridgeStateKind, ChatKind, ChatMember, ChatResync, EventSender, HistoryItem,
    MediaKind, MediaMessage, MediaSource, MediaUrl, RemoteEvent,
};
use weft_sdk::login::{DisplayKind, DisplayStep, FieldKind, InputField, LoginStep, StepInput};
use weft_sdk::{
    Connector, Error, Login, MatrixEdit, MatrixMedia, MatrixMessage, MatrixReaction, Result,
    config, kv, session, timers,
};

use crate::api::{Client, DeviceCodeStatus, EventKind, NewMessage, Session};

const POLL_TIMER: &str = "poll";
/// How long a remote "typing" shows on Matrix unless cleared: the service
/// says when someone stops.
const TYPING_TIMEOUT_MS: u32 = 30_000;
const CURSOR_KEY: &str = "cursor";
const PASSWORD_STEP: &str = "echo.login.password";
const CODE_STEP: &str = "echo.login.code";
/// At most this many pages of messages per poll, so one poll stays well
/// inside the host's call deadline even after a long outage.
const MAX_PAGES_PER_POLL: usize = 10;

/// The connector. Its fields are only a cache and the state of a login
/// process in progress; the durable state is in KV.
#[derive(Default)]
pub struct Echo {
    /// The device code being waited on, during a `code` login.
    pending_code: Option<api::DeviceCode>,
    /// The last bridge state sent, so it is sent once per change.
    last_state: Option<BridgeStateKind>,
}

/// What the connector remembers per chat, to resync only on change.
#[derive(Serialize, Deserialize, PartialEq)]
struct ChatFingerprint {
    name: Option<String>,
    members: Vec<String>,
}

fn base_url() -> Result<String> {
    config::require("base-url")
}

fn client() -> Result<(Client, Session)> {
    let session: Session = session::metadata()?
        .ok_or_else(|| Error::bad_credentials("this login has no echo-service token"))?;
    Ok((Client::new(&base_url()?, Some(&session.token)), session))
}

impl Echo {
    fn report(&mut self, state: BridgeStateKind, code: Option<&str>, message: Option<&str>) {
        if self.last_state == Some(state) {
            return;
        }
        if events::set_bridge_state(state, code, message).is_ok() {
            self.last_state = Some(state);
        }
    }

    /// Passes a call's result through, reporting a rejected token as this
    /// login's state whichever call saw it first (a poll, a send or a
    /// backfill), so the user always sees the same explanation.
    fn checked<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result
            && api::is_unauthorized(error)
        {
            self.report(
                BridgeStateKind::BadCredentials,
                Some("echo-token-rejected"),
                Some("The echo service no longer accepts this login's token."),
            );
        }
        result
    }

    /// One poll: resync chats that changed, then bridge what happened.
    fn poll(&mut self) -> Result<()> {
        let (client, session) = client()?;
        self.resync_chats(&client, &session)?;

        // A new login starts from now: older messages reach Matrix as a
        // new portal's history (`fetch_history`), not as new messages
        // (unless the operator asks to replay everything).
        let mut cursor: u64 = match kv::get(CURSOR_KEY)? {
            Some(cursor) => cursor,
            None => {
                let start = match config::get::<String>("start-from")?.as_deref() {
                    Some("beginning") => 0,
                    _ => client.events_after(u64::MAX - 1, 1)?.latest,
                };
                kv::set(CURSOR_KEY, &start)?;
                start
            }
        };
        for _ in 0..MAX_PAGES_PER_POLL {
            let page = client.events_after(cursor, 100)?;
            for event in &page.events {
                if let Some(remote) = remote_event(&client, &session, event) {
                    queue(remote)?;
                }
                cursor = cursor.max(event.seq);
            }
            // The events are stored durably by now, so moving the cursor
            // cannot lose one even if the host dies right here.
            kv::set(CURSOR_KEY, &cursor)?;
            if !page.has_more {
                break;
            }
        }
        Ok(())
    }

    fn resync_chats(&mut self, client: &Client, session: &Session) -> Result<()> {
        for chat in client.chats()? {
            let key = format!("chat/{}", chat.id);
            let fingerprint = ChatFingerprint {
                name: chat.name.clone(),
                members: chat.members.iter().map(|m| m.id.clone()).collect(),
            };
            if kv::get::<ChatFingerprint>(&key)?.as_ref() == Some(&fingerprint) {
                continue;
            }
            let members = chat
                .members
                .iter()
                .map(|m| ChatMember {
                    user: events::remote_user(&m.id, Some(m.display_name.clone())),
                    is_me: m.id == session.user_id,
                })
                .collect();
            events::queue(RemoteEvent::ChatResync(ChatResync {
                chat_id: chat.id.clone(),
                name: chat.name.clone(),
                topic: None,
                kind: if chat.kind == "direct" {
                    ChatKind::Direct
                } else {
                    ChatKind::Group
                },
                members,
                create_portal: true,
            }))?;
            kv::set(&key, &fingerprint)?;
        }
        Ok(())
    }

    fn completed(login: api::LoginResponse) -> Result<LoginStep> {
        let session = Session {
            token: login.token,
            user_id: login.user_id.clone(),
        };
        LoginStep::complete(
            "echo.login.complete",
            login.user_id,
            login.display_name,
            &session,
        )
    }
}

/// Queues a remote event: a file goes through `queue-media`. A file the
/// host refuses (beyond the operator's size limit) is announced as text,
/// so the chat shows something was sent and the poll goes on.
fn queue(event: Remote) -> Result<()> {
    match event {
        Remote::Event(event) => events::queue(event)?,
        Remote::Media(media) => match events::queue_media(media.clone()) {
            Err(events::EventError::Invalid(reason)) => {
                weft_sdk::warn!("file {} not bridged: {reason}", media.attachment.file_name);
                events::queue(RemoteEvent::Message(events::Message {
                    chat_id: media.chat_id,
                    message_id: media.message_id,
                    sender: media.sender,
                    timestamp_ms: media.timestamp_ms,
                    stream_order: media.stream_order,
                    text: format!("📎 {} (not bridged: {reason})", media.attachment.file_name),
                    html: None,
                    reply_to: media.reply_to,
                }))?;
            }
            other => other?,
        },
    }
    Ok(())
}

/// What one entry of the service's activity log becomes.
enum Remote {
    Event(RemoteEvent),
    Media(MediaMessage),
}

fn sender_of(session: &Session, user: &api::User) -> EventSender {
    events::sender(
        events::remote_user(&user.id, Some(user.display_name.clone())),
        user.id == session.user_id,
    )
}

/// The remote event for an entry of the activity log; `None` for a
/// message deleted since.
fn remote_event(client: &Client, session: &Session, event: &api::Event) -> Option<Remote> {
    let sender = sender_of(session, &event.actor);
    let chat_id = event.chat_id.clone();
    let remote = match &event.kind {
        EventKind::Message { message } => {
            return message
                .as_ref()
                .map(|m| match message_or_file(client, session, m) {
                    HistoryItem::Message(message) => Remote::Event(RemoteEvent::Message(message)),
                    HistoryItem::Media(media) => Remote::Media(media),
                });
        }
        EventKind::Edit { message_id, text } => RemoteEvent::Edit(events::Edit {
            chat_id,
            message_id: message_id.clone(),
            sender,
            timestamp_ms: event.ts,
            text: text.clone(),
            html: None,
        }),
        EventKind::Delete { message_id } => RemoteEvent::Delete(events::Delete {
            chat_id,
            message_id: message_id.clone(),
            sender,
            timestamp_ms: event.ts,
        }),
        EventKind::Reaction {
            message_id,
            key,
            removed,
        } => RemoteEvent::Reaction(events::Reaction {
            chat_id,
            message_id: message_id.clone(),
            sender,
            key: key.clone(),
            timestamp_ms: event.ts,
            removed: *removed,
        }),
        EventKind::Typing { typing } => RemoteEvent::Typing(events::Typing {
            chat_id,
            sender,
            timeout_ms: if *typing { TYPING_TIMEOUT_MS } else { 0 },
        }),
        EventKind::Read { up_to } => RemoteEvent::ReadReceipt(events::ReadReceipt {
            chat_id,
            sender,
            up_to: up_to.clone(),
            timestamp_ms: event.ts,
        }),
    };
    Some(Remote::Event(remote))
}

/// A message, or a message with a file (which the host fetches from the
/// service with this login's token).
fn message_or_file(client: &Client, session: &Session, message: &api::Message) -> HistoryItem {
    let sender = sender_of(session, &message.sender);
    let caption = (!message.text.is_empty()).then(|| message.text.clone());
    match &message.file {
        Some(file) => {
            let (url, headers) = client.file_source(&file.id);
            HistoryItem::Media(MediaMessage {
                chat_id: message.chat_id.clone(),
                message_id: message.id.clone(),
                sender,
                timestamp_ms: message.ts,
                stream_order: Some(message.seq),
                caption,
                reply_to: message.reply_to.clone(),
                attachment: Attachment {
                    file_name: file.name.clone(),
                    mime_type: file.mime_type.clone(),
                    kind: media_kind(&file.mime_type),
                    size: Some(file.size),
                    width: None,
                    height: None,
                    duration_ms: None,
                    source: MediaSource::Url(MediaUrl { url, headers }),
                },
            })
        }
        None => HistoryItem::Message(events::Message {
            chat_id: message.chat_id.clone(),
            message_id: message.id.clone(),
            sender,
            timestamp_ms: message.ts,
            stream_order: Some(message.seq),
            text: message.text.clone(),
            html: message.html.clone(),
            reply_to: message.reply_to.clone(),
        }),
    }
}

fn media_kind(mime_type: &str) -> MediaKind {
    match mime_type.split('/').next() {
        Some("image") => MediaKind::Image,
        Some("video") => MediaKind::Video,
        Some("audio") => MediaKind::Audio,
        _ => MediaKind::File,
    }
}

fn code_step(code: &str) -> LoginStep {
    LoginStep::display_and_wait(
        CODE_STEP,
        format!("Approve the code {code} on the echo service."),
        DisplayStep {
            kind: DisplayKind::Code,
            data: code.to_owned(),
            image_url: None,
            poll_after_ms: 1000,
        },
    )
}

impl Connector for Echo {
    fn start(&mut self) -> Result<()> {
        let interval: u64 = config::get("poll-interval-ms")?.unwrap_or(2000);
        timers::set_interval(POLL_TIMER, Duration::from_millis(interval))?;
        self.report(BridgeStateKind::Connecting, None, None);
        Ok(())
    }

    fn on_timer(&mut self, name: &str) -> Result<()> {
        if name != POLL_TIMER {
            weft_sdk::warn!("unknown timer {name}");
            return Ok(());
        }
        match self.poll() {
            Ok(()) => {
                self.report(BridgeStateKind::Connected, None, None);
                Ok(())
            }
            Err(error) if api::is_unauthorized(&error) => self.checked(Err(error)),
            Err(error) if api::is_transient(&error) => {
                self.report(
                    BridgeStateKind::TransientDisconnect,
                    Some("echo-unreachable"),
                    Some(error.message()),
                );
                Err(error)
            }
            Err(error) => {
                self.report(
                    BridgeStateKind::UnknownError,
                    Some("echo-poll-failed"),
                    Some(error.message()),
                );
                Err(error)
            }
        }
    }

    fn handle_matrix_message(&mut self, message: MatrixMessage) -> Result<String> {
        let (client, _) = client()?;
        let post = NewMessage {
            text: &message.text,
            html: message.html.as_deref(),
            reply_to: message.reply_to.as_deref(),
            file_id: None,
        };
        self.checked(client.send(&message.chat_id, &post))
    }

    fn handle_matrix_media(&mut self, media: MatrixMedia) -> Result<String> {
        let (client, _) = client()?;
        let file_id =
            self.checked(client.upload(&media.file_name, &media.mime_type, media.data))?;
        let post = NewMessage {
            text: media.caption.as_deref().unwrap_or_default(),
            html: None,
            reply_to: media.reply_to.as_deref(),
            file_id: Some(&file_id),
        };
        self.checked(client.send(&media.chat_id, &post))
    }

    fn handle_matrix_reaction(&mut self, reaction: MatrixReaction) -> Result<String> {
        let (client, _) = client()?;
        self.checked(client.react(&reaction.chat_id, &reaction.message_id, &reaction.key))
    }

    fn handle_matrix_reaction_removal(
        &mut self,
        chat_id: &str,
        message_id: &str,
        reaction_id: &str,
    ) -> Result<()> {
        let (client, _) = client()?;
        // The service's reaction id is its key.
        self.checked(client.unreact(chat_id, message_id, reaction_id))
    }

    fn handle_matrix_read_receipt(&mut self, chat_id: &str, up_to: &str) -> Result<()> {
        let (client, _) = client()?;
        self.checked(client.read(chat_id, up_to))
    }

    fn handle_matrix_typing(&mut self, chat_id: &str, typing: bool) -> Result<()> {
        let (client, _) = client()?;
        self.checked(client.typing(chat_id, typing))
    }

    fn fetch_history(&mut self, chat_id: &str, limit: u32) -> Result<Vec<HistoryItem>> {
        let (client, session) = client()?;
        Ok(self
            .checked(client.history(chat_id, limit))?
            .iter()
            .map(|message| message_or_file(&client, &session, message))
            .collect())
    }

    fn handle_matrix_edit(&mut self, edit: MatrixEdit) -> Result<()> {
        let (client, _) = client()?;
        self.checked(client.edit(&edit.chat_id, &edit.message_id, &edit.text))
    }

    fn handle_matrix_redaction(&mut self, chat_id: &str, message_id: &str) -> Result<()> {
        let (client, _) = client()?;
        self.checked(client.delete(chat_id, message_id))
    }

    fn logout(&mut self) -> Result<()> {
        let (client, _) = client()?;
        client.logout()
    }
}

impl Login for Echo {
    fn login_start(&mut self, flow_id: &str, _relogin: Option<&str>) -> Result<LoginStep> {
        match flow_id {
            "password" => Ok(LoginStep::user_input(
                PASSWORD_STEP,
                "Enter your echo-service user name and password.",
                vec![
                    InputField::new(
                        FieldKind::Username,
                        "username",
                        "User name",
                        "Your echo-service user name",
                    ),
                    InputField::new(
                        FieldKind::Password,
                        "password",
                        "Password",
                        "Your echo-service password",
                    ),
                ],
            )),
            "code" => {
                let device = Client::new(&base_url()?, None).start_device_code()?;
                let step = code_step(&device.code);
                self.pending_code = Some(device);
                Ok(step)
            }
            other => Err(Error::invalid_input(format!(
                "unknown login flow `{other}`"
            ))),
        }
    }

    fn login_submit(&mut self, step_id: &str, input: StepInput) -> Result<LoginStep> {
        let client = Client::new(&base_url()?, None);
        match step_id {
            PASSWORD_STEP => {
                let username = input
                    .field("username")
                    .ok_or_else(|| Error::invalid_input("missing user name"))?;
                let password = input
                    .field("password")
                    .ok_or_else(|| Error::invalid_input("missing password"))?;
                Self::completed(client.login(username, password)?)
            }
            CODE_STEP => {
                let pending = self
                    .pending_code
                    .as_ref()
                    .ok_or_else(|| Error::internal("no device code pending"))?;
                match client.poll_device_code(&pending.device_id)? {
                    DeviceCodeStatus::Approved(login) => Self::completed(login),
                    DeviceCodeStatus::Expired => {
                        Err(Error::invalid_input("The code expired; start again."))
                    }
                    // Still waiting: the same step again; the host asks later.
                    DeviceCodeStatus::Pending => Ok(code_step(&pending.code)),
                }
            }
            other => Err(Error::invalid_input(format!("unknown step `{other}`"))),
        }
    }

    fn login_cancel(&mut self) {
        self.pending_code = None;
    }
}

weft_sdk::register_connector!(Echo);
