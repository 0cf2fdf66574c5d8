//! The management room: a direct chat with the bot where a user logs in,
//! lists and removes logins. It drives the same login processes as the
//! provisioning API.

use anyhow::Context;
use ruma::api::client::message::send_message_event;
use ruma::api::client::redact::redact_event;
use ruma::events::room::ImageInfo;
use ruma::events::room::message::{ImageMessageEventContent, MessageType, RoomMessageEventContent};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedTransactionId, RoomId, UInt, UserId};

use super::{Bridge, BridgeError, qr, txn_id};
use crate::login_process::{
    FieldView, ProcessError, Progress, StepInput, StepParamsView, StepView,
};
use crate::logins::LoginKey;

/// A plugin's message as a sentence of the bot's, ending in one full stop.
fn sentence(message: &str) -> String {
    let message = message.trim().trim_end_matches('.');
    if message.is_empty() {
        "That did not work.".into()
    } else {
        format!("{message}.")
    }
}

/// At most this many characters of an unknown command are quoted back:
/// a secret sent when no login waits for it should not be repeated whole.
const QUOTED_COMMAND_CHARS: usize = 24;

/// Whether a field's answer is a secret the bot redacts from the room: a
/// password, or a token (an API key, a copied browser session).
fn is_secret(kind: &str) -> bool {
    matches!(kind, "password" | "token")
}

/// The name of the picture of a login step's QR code.
const QR_FILE_NAME: &str = "login-qr.png";

/// The text of a login step's QR code picture, for screen readers and
/// clients that show no pictures.
const QR_BODY: &str = "QR code of the login step";

/// How the management room's notice shows a `display_and_wait` step's
/// data, given whether its QR code picture follows.
fn display_text(kind: &str, data: &str, picture_follows: bool) -> String {
    let link = data.starts_with("https://") || data.starts_with("http://");
    match (kind, picture_follows, link) {
        ("qr", true, true) => format!("The QR code below opens {data}"),
        ("qr", true, false) => format!("Scan the QR code below (its data: {data})"),
        ("qr", false, true) => format!("Open {data}"),
        ("qr", false, false) => format!("QR code data: {data}"),
        _ => format!("Code: {data}"),
    }
}

/// The commands, for `help` and the welcome message.
pub const HELP: &str = "Commands:\n\
• help — this list\n\
• login [flow] — add a remote account (without a flow: list the flows)\n\
• logins — your logins and their states\n\
• logout <login> — remove a login\n\
• cancel — stop the login in progress";

/// A login in progress in a management room.
#[derive(Debug, Clone)]
pub struct Conversation {
    process: String,
    step: StepView,
    /// Fields still to ask for, in order.
    pending: Vec<FieldView>,
    /// Values given so far.
    collected: Vec<(String, String)>,
}

impl Bridge {
    /// Handles a message the owner of a management room sent there.
    pub async fn handle_command(
        &self,
        room: &RoomId,
        user: &UserId,
        event: &EventId,
        body: &str,
    ) -> Result<(), BridgeError> {
        let room_key = room.to_string();
        let waiting = self.conversations.lock().await.get(&room_key).cloned();
        let text = body.trim();
        let (command, argument) = match text.split_once(char::is_whitespace) {
            Some((c, a)) => (c.to_lowercase(), a.trim()),
            None => (text.to_lowercase(), ""),
        };
        match command.as_str() {
            "cancel" => match self.conversations.lock().await.remove(&room_key) {
                Some(conversation) => {
                    let _ = self
                        .processes
                        .cancel(&conversation.process, user.as_str())
                        .await;
                    self.notice(room, "Login cancelled.").await
                }
                None => self.notice(room, "No login is in progress.").await,
            },
            _ if waiting.is_some() => {
                self.continue_login(room, user, event, text, waiting.expect("checked"))
                    .await
            }
            "help" => self.notice(room, HELP).await,
            "login" => self.start_login(room, user, argument).await,
            "logins" => self.list_logins(room, user).await,
            "logout" => self.logout_command(room, user, argument).await,
            _ => {
                let as_sent = text.split_whitespace().next().unwrap_or_default();
                let quoted: String = as_sent.chars().take(QUOTED_COMMAND_CHARS).collect();
                let more = if quoted.len() < as_sent.len() {
                    "…"
                } else {
                    ""
                };
                self.notice(room, &format!("Unknown command `{quoted}{more}`.\n{HELP}"))
                    .await
            }
        }
    }

    async fn start_login(
        &self,
        room: &RoomId,
        user: &UserId,
        flow: &str,
    ) -> Result<(), BridgeError> {
        let flows = self.processes.flows();
        let flow = match (flow, flows.as_slice()) {
            ("", [only]) => only.id.clone(),
            ("", _) => {
                let list: Vec<String> = flows
                    .iter()
                    .map(|f| format!("• {} — {}: {}", f.id, f.name, f.description))
                    .collect();
                return self
                    .notice(
                        room,
                        &format!("Choose a flow with `login <flow>`:\n{}", list.join("\n")),
                    )
                    .await;
            }
            (flow, _) => flow.to_owned(),
        };
        match self.processes.start(user.as_str(), &flow, None).await {
            Ok((process, step)) => self.present(room, user, process, step).await,
            Err(error) => {
                self.notice(room, &format!("Cannot start the login: {error}"))
                    .await
            }
        }
    }

    /// Shows a step and sets up what the room waits for.
    async fn present(
        &self,
        room: &RoomId,
        user: &UserId,
        process: String,
        step: StepView,
    ) -> Result<(), BridgeError> {
        let room_key = room.to_string();
        match &step.params {
            StepParamsView::UserInput { fields } => {
                let mut pending = fields.clone();
                pending.reverse();
                let conversation = Conversation {
                    process,
                    step: step.clone(),
                    pending,
                    collected: Vec::new(),
                };
                let first = conversation.pending.last().cloned();
                self.conversations
                    .lock()
                    .await
                    .insert(room_key, conversation);
                self.notice(room, &step.instructions).await?;
                if let Some(field) = first {
                    self.ask(room, &field).await?;
                }
                Ok(())
            }
            StepParamsView::Cookies(cookies) => {
                let conversation = Conversation {
                    process,
                    step: step.clone(),
                    pending: Vec::new(),
                    collected: Vec::new(),
                };
                self.conversations
                    .lock()
                    .await
                    .insert(room_key, conversation);
                let url = cookies
                    .get("url")
                    .and_then(|u| u.as_str())
                    .unwrap_or_default();
                self.notice(
                    room,
                    &format!(
                        "{}\nOpen {url} and send the values as a JSON object (field id → value).",
                        step.instructions
                    ),
                )
                .await
            }
            StepParamsView::DisplayAndWait { kind, data, .. } => {
                let conversation = Conversation {
                    process: process.clone(),
                    step: step.clone(),
                    pending: Vec::new(),
                    collected: Vec::new(),
                };
                self.conversations
                    .lock()
                    .await
                    .insert(room_key, conversation);
                // Drawn first, so the notice never promises a picture that
                // cannot follow.
                let picture = (kind == "qr").then(|| qr::draw(data)).and_then(|drawn| {
                    drawn
                        .inspect_err(|error| {
                            tracing::warn!(%room, error = format!("{error:#}"), "could not draw a login step's QR code");
                        })
                        .ok()
                });
                let shown = display_text(kind, data, picture.is_some());
                self.notice(
                    room,
                    &format!(
                        "{}\n{shown}\nI will tell you when it is done; send `cancel` to stop.",
                        step.instructions
                    ),
                )
                .await?;
                let mut shown_picture = None;
                if let Some(picture) = picture {
                    match self.send_qr(room, picture).await {
                        Ok(event) => shown_picture = Some(event),
                        Err(error) => {
                            tracing::warn!(%room, error = format!("{error:#}"), "could not send a login step's QR code");
                            self.notice(
                                room,
                                "I could not send the QR code's picture; use the text above.",
                            )
                            .await?;
                        }
                    }
                }
                self.spawn_wait(
                    room.to_owned(),
                    user.to_owned(),
                    process,
                    step.step_id.clone(),
                    shown_picture,
                );
                Ok(())
            }
            StepParamsView::Complete { user_login_id } => {
                self.conversations.lock().await.remove(&room_key);
                let name = match LoginKey::parse(user_login_id) {
                    Some(key) => self.login_name(&key),
                    None => user_login_id.clone(),
                };
                self.notice(room, &format!("Logged in: {name}")).await
            }
        }
    }

    /// A login as the remote network names its account, with the id that
    /// `logout` takes.
    fn login_name(&self, key: &LoginKey) -> String {
        match self.logins.store.get(key) {
            Ok(Some(record)) if record.remote_name != key.id => {
                format!("{} ({key})", record.remote_name)
            }
            _ => key.to_string(),
        }
    }

    /// Sends a QR code's picture to `room`, from the bot; its event.
    async fn send_qr(&self, room: &RoomId, picture: qr::QrPicture) -> anyhow::Result<OwnedEventId> {
        let size = picture.png.len();
        let url = self
            .client
            .upload(picture.png, "image/png", QR_FILE_NAME, &self.bot())
            .await
            .context("failed to upload the QR code")?;
        let mut info = ImageInfo::new();
        info.mimetype = Some("image/png".into());
        info.size = UInt::new(size as u64);
        info.width = Some(picture.side.into());
        info.height = Some(picture.side.into());
        // The body is what screen readers and text-only clients show.
        let mut image = ImageMessageEventContent::plain(QR_BODY.into(), url);
        image.filename = Some(QR_FILE_NAME.into());
        image.info = Some(Box::new(info));
        let content = RoomMessageEventContent::new(MessageType::Image(image));
        let request = send_message_event::v3::Request::new(
            room.to_owned(),
            OwnedTransactionId::from(txn_id()),
            &content,
        )?;
        Ok(self
            .client
            .send(request, None)
            .await
            .context("failed to send the QR code")?
            .event_id)
    }

    async fn ask(&self, room: &RoomId, field: &FieldView) -> Result<(), BridgeError> {
        let mut prompt = format!("Please send your {}", lowercase_first_word(&field.name));
        if !field.description.is_empty() {
            prompt.push_str(&format!(" ({})", field.description));
        }
        if is_secret(&field.kind) {
            prompt.push_str(". I will try to redact your reply; the provisioning API avoids putting it in the room at all");
        }
        if !field.options.is_empty() {
            prompt.push_str(&format!(". Options: {}", field.options.join(", ")));
        }
        self.notice(room, &format!("{prompt}.")).await
    }

    /// Takes the user's reply to the step the room is waiting on.
    async fn continue_login(
        &self,
        room: &RoomId,
        user: &UserId,
        event: &EventId,
        text: &str,
        mut conversation: Conversation,
    ) -> Result<(), BridgeError> {
        let input =
            match &conversation.step.params {
                StepParamsView::UserInput { fields } => {
                    let Some(field) = conversation.pending.pop() else {
                        // Waiting to retry (see `Self::offer_retry`): any
                        // message retries with the answers given; one that
                        // looks like another answer to a secret is removed.
                        if fields.iter().any(|f| is_secret(&f.kind))
                            && !text.eq_ignore_ascii_case("retry")
                        {
                            self.try_redact(room, event).await;
                        }
                        return self.submit_answers(room, user, conversation).await;
                    };
                    if is_secret(&field.kind) {
                        self.try_redact(room, event).await;
                    }
                    conversation
                        .collected
                        .push((field.id.clone(), text.to_owned()));
                    if let Some(next) = conversation.pending.last().cloned() {
                        self.conversations
                            .lock()
                            .await
                            .insert(room.to_string(), conversation);
                        return self.ask(room, &next).await;
                    }
                    StepInput::UserInput(conversation.collected.clone())
                }
                StepParamsView::Cookies(_) => {
                    match serde_json::from_str::<std::collections::BTreeMap<String, String>>(text) {
                        Ok(values) => {
                            self.try_redact(room, event).await;
                            StepInput::Cookies(values.into_iter().collect())
                        }
                        Err(_) => return self
                            .notice(
                                room,
                                "That is not a JSON object of strings; try again or send `cancel`.",
                            )
                            .await,
                    }
                }
                StepParamsView::DisplayAndWait { .. } => {
                    return self
                        .notice(
                            room,
                            "Waiting for the step to finish; send `cancel` to stop.",
                        )
                        .await;
                }
                StepParamsView::Complete { .. } => return Ok(()),
            };
        self.submit_step(room, user, conversation, input).await
    }

    /// Submits the answers collected for a user-input step again.
    async fn submit_answers(
        &self,
        room: &RoomId,
        user: &UserId,
        conversation: Conversation,
    ) -> Result<(), BridgeError> {
        let input = StepInput::UserInput(conversation.collected.clone());
        self.submit_step(room, user, conversation, input).await
    }

    async fn submit_step(
        &self,
        room: &RoomId,
        user: &UserId,
        conversation: Conversation,
        input: StepInput,
    ) -> Result<(), BridgeError> {
        self.conversations.lock().await.remove(&room.to_string());
        let result = self
            .processes
            .submit(
                &conversation.process,
                user.as_str(),
                &conversation.step.step_id,
                input,
            )
            .await;
        match result {
            // The plugin refused the answer but its step stands, as the
            // provisioning API's 400 leaves it: say why and ask again.
            Err(ProcessError::Plugin(refusal)) => {
                self.ask_again(room, conversation, &refusal).await
            }
            // The answers were fine; what they led to failed for now.
            Err(ProcessError::Retry(failure))
                if matches!(conversation.step.params, StepParamsView::UserInput { .. }) =>
            {
                self.offer_retry(room, conversation, &failure).await
            }
            result => {
                self.after_step(room, user, &conversation.process, result)
                    .await
            }
        }
    }

    /// Keeps the answers of a step whose login failed for now, and says
    /// that the next message retries it.
    async fn offer_retry(
        &self,
        room: &RoomId,
        mut conversation: Conversation,
        failure: &str,
    ) -> Result<(), BridgeError> {
        conversation.pending.clear();
        self.conversations
            .lock()
            .await
            .insert(room.to_string(), conversation);
        let failure = sentence(failure);
        self.notice(
            room,
            &format!(
                "{failure} Send `retry` to try again with what you sent, or `cancel` to stop."
            ),
        )
        .await
    }

    /// Asks for a step's answer again after the plugin refused one.
    async fn ask_again(
        &self,
        room: &RoomId,
        mut conversation: Conversation,
        refusal: &str,
    ) -> Result<(), BridgeError> {
        conversation.collected.clear();
        conversation.pending = match &conversation.step.params {
            StepParamsView::UserInput { fields } => fields.iter().rev().cloned().collect(),
            _ => Vec::new(),
        };
        let first = conversation.pending.last().cloned();
        self.conversations
            .lock()
            .await
            .insert(room.to_string(), conversation);
        let refusal = sentence(refusal);
        self.notice(
            room,
            &format!("{refusal} Try again, or send `cancel` to stop."),
        )
        .await?;
        match first {
            Some(field) => self.ask(room, &field).await,
            None => Ok(()),
        }
    }

    async fn after_step(
        &self,
        room: &RoomId,
        user: &UserId,
        process: &str,
        result: Result<Progress, ProcessError>,
    ) -> Result<(), BridgeError> {
        match result {
            Ok(Progress::Step(step)) => self.present(room, user, process.to_owned(), step).await,
            Ok(Progress::Completed(done)) => {
                self.conversations.lock().await.remove(&room.to_string());
                if let Some(old) = &done.replaced {
                    self.delete_login(old, false, "the login was replaced")
                        .await?;
                }
                let name = self.login_name(&done.key);
                self.notice(
                    room,
                    &format!("Logged in: {name}. Your chats will appear as rooms shortly."),
                )
                .await
            }
            Err(error) => {
                self.conversations.lock().await.remove(&room.to_string());
                let _ = self.processes.cancel(process, user.as_str()).await;
                let error = error.to_string();
                self.notice(
                    room,
                    &format!(
                        "Login failed: {}. Send `login` to try again.",
                        error.trim_end_matches('.')
                    ),
                )
                .await
            }
        }
    }

    /// Waits for a display-and-wait step in the background.
    fn spawn_wait(
        &self,
        room: OwnedRoomId,
        user: ruma::OwnedUserId,
        process: String,
        step_id: String,
        picture: Option<OwnedEventId>,
    ) {
        let Some(bridge) = self.this.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let result = loop {
                let result = bridge
                    .processes
                    .wait(&process, user.as_str(), &step_id)
                    .await;
                match &result {
                    Ok(Progress::Step(step))
                        if step.step_id == step_id && step.kind == "display_and_wait" =>
                    {
                        continue;
                    }
                    _ => break result,
                }
            };
            // The step is over, and so is the one-time link its QR code
            // holds: the picture goes, as bridgev2's bot removes its own.
            if let Some(picture) = picture {
                let request =
                    redact_event::v3::Request::new(room.clone(), picture, txn_id().into());
                if let Err(error) = bridge.client.send(request, None).await {
                    tracing::info!(%room, %error, "could not remove a finished login step's QR code");
                }
            }
            if matches!(result, Err(ProcessError::Cancelled)) {
                return;
            }
            if let Err(error) = bridge.after_step(&room, &user, &process, result).await {
                tracing::warn!(%error, "failed to report a login step");
            }
        });
    }

    async fn try_redact(&self, room: &RoomId, event: &EventId) {
        let request =
            redact_event::v3::Request::new(room.to_owned(), event.to_owned(), txn_id().into());
        if let Err(error) = self.client.send(request, None).await {
            tracing::info!(%room, %error, "could not redact a secret reply");
            // The user must know their secret is still in the room.
            let warning = "⚠ I could not redact your reply (I lack the power to redact in this room): it is still in the room's history. Delete it yourself, and consider changing that password or signing out of that session.";
            if let Err(error) = self.notice(room, warning).await {
                tracing::warn!(%room, %error, "could not warn that a secret reply stays in the room");
            }
        }
    }

    async fn list_logins(&self, room: &RoomId, user: &UserId) -> Result<(), BridgeError> {
        let logins = self.logins.store.of_owner(user.as_str())?;
        if logins.is_empty() {
            return self
                .notice(room, "You have no logins. Send `login` to add one.")
                .await;
        }
        let lines: Vec<String> = logins
            .iter()
            .map(|r| {
                let state = serde_json::to_value(r.state.state_event)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let reason = r
                    .state
                    .message
                    .as_deref()
                    .map(|m| format!(" — {m}"))
                    .unwrap_or_default();
                format!("• {} ({}): {state}{reason}", r.key, r.remote_name)
            })
            .collect();
        self.notice(room, &format!("Your logins:\n{}", lines.join("\n")))
            .await
    }

    async fn logout_command(
        &self,
        room: &RoomId,
        user: &UserId,
        argument: &str,
    ) -> Result<(), BridgeError> {
        if argument.is_empty() {
            return self
                .notice(
                    room,
                    "Usage: logout <login>, e.g. logout echo:alice (see `logins`).",
                )
                .await;
        }
        let mine = self.logins.store.of_owner(user.as_str())?;
        let key = LoginKey::parse(argument)
            .filter(|k| mine.iter().any(|r| r.key == *k))
            .or_else(|| {
                let matches: Vec<&crate::logins::LoginRecord> =
                    mine.iter().filter(|r| r.key.id == argument).collect();
                (matches.len() == 1).then(|| matches[0].key.clone())
            });
        let Some(key) = key else {
            return self
                .notice(
                    room,
                    &format!("You have no login `{argument}` (see `logins`)."),
                )
                .await;
        };
        self.delete_login(&key, true, "logged out").await?;
        self.notice(room, &format!("Logged out of {key}.")).await
    }
}

/// `name` with its first word in lower case unless it is an acronym, to
/// follow "Please send your": "User name" → "user name", "API token" →
/// "API token".
fn lowercase_first_word(name: &str) -> String {
    let first = name.split_whitespace().next().unwrap_or_default();
    let acronym = first.chars().filter(|c| c.is_alphabetic()).count() > 1
        && first
            .chars()
            .filter(|c| c.is_alphabetic())
            .all(char::is_uppercase);
    if acronym {
        return name.to_owned();
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod prompt_tests {
    use super::{display_text, lowercase_first_word};

    #[test]
    fn a_field_name_reads_as_part_of_the_sentence_and_acronyms_keep_their_case() {
        assert_eq!(lowercase_first_word("User name"), "user name");
        assert_eq!(lowercase_first_word("Password"), "password");
        assert_eq!(lowercase_first_word("API token"), "API token");
        assert_eq!(lowercase_first_word(""), "");
    }

    #[test]
    fn a_qr_steps_notice_promises_a_picture_only_when_one_follows() {
        let link = "https://bridge.example/login/abc";
        assert_eq!(
            display_text("qr", link, true),
            format!("The QR code below opens {link}")
        );
        assert_eq!(display_text("qr", link, false), format!("Open {link}"));
        assert_eq!(
            display_text("qr", "2@xyz", true),
            "Scan the QR code below (its data: 2@xyz)"
        );
        assert_eq!(display_text("qr", "2@xyz", false), "QR code data: 2@xyz");
        assert_eq!(display_text("code", "ABCD-1234", false), "Code: ABCD-1234");
    }
}
