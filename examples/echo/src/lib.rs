//! The echo connector: the example weft plugin.
//!
//! It bridges the echo chat service (`examples/echo-service`). Each login's
//! instance polls the service on a host timer, keeps its cursor in KV, and
//! queues remote events; Matrix messages are posted back to the service.
//! Everything it keeps lives in KV or in the login's metadata, so the host
//! can replace the instance at any time without losing its place.
//!
//! Copy this crate to start a connector: the manifest (`weft.toml`) says
//! what the plugin asks for, `Cargo.toml`'s `[package.metadata.weft]` lets
//! `cargo weft build` find it, and this file implements the two traits.

mod api;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_sdk::events::{self, BridgeStateKind, ChatKind, ChatMember, ChatResync, RemoteEvent};
use weft_sdk::login::{DisplayKind, DisplayStep, FieldKind, InputField, LoginStep, StepInput};
use weft_sdk::{
    Connector, Error, Login, MatrixEdit, MatrixMessage, Result, config, kv, session, timers,
};

use crate::api::{Client, DeviceCodeStatus, Session};

const POLL_TIMER: &str = "poll";
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

    /// One poll: resync chats that changed, then bridge new messages.
    fn poll(&mut self) -> Result<()> {
        let (client, session) = client()?;
        self.resync_chats(&client, &session)?;

        let mut cursor: u64 = kv::get(CURSOR_KEY)?.unwrap_or(0);
        for _ in 0..MAX_PAGES_PER_POLL {
            let page = client.messages_after(cursor)?;
            for message in &page.messages {
                let is_from_me = message.sender.id == session.user_id;
                events::queue(RemoteEvent::Message(events::Message {
                    chat_id: message.chat_id.clone(),
                    message_id: message.id.clone(),
                    sender: events::sender(
                        events::remote_user(
                            &message.sender.id,
                            Some(message.sender.display_name.clone()),
                        ),
                        is_from_me,
                    ),
                    timestamp_ms: message.ts,
                    stream_order: Some(message.seq),
                    text: message.text.clone(),
                    html: message.html.clone(),
                    reply_to: message.reply_to.clone(),
                }))?;
                cursor = cursor.max(message.seq);
            }
            // The events are stored durably by now, so moving the cursor
            // cannot lose a message even if the host dies right here.
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
            Err(error) if api::is_unauthorized(&error) => {
                self.report(
                    BridgeStateKind::BadCredentials,
                    Some("echo-token-rejected"),
                    Some("The echo service no longer accepts this login's token."),
                );
                Err(error)
            }
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
        client.send(
            &message.chat_id,
            &message.text,
            message.html.as_deref(),
            message.reply_to.as_deref(),
        )
    }

    fn handle_matrix_edit(&mut self, edit: MatrixEdit) -> Result<()> {
        let (client, _) = client()?;
        client.edit(&edit.chat_id, &edit.message_id, &edit.text)
    }

    fn handle_matrix_redaction(&mut self, chat_id: &str, message_id: &str) -> Result<()> {
        let (client, _) = client()?;
        client.delete(chat_id, message_id)
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
