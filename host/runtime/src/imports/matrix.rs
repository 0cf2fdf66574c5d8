//! `weft:plugin/matrix`: remote events, converted to the runtime's own
//! types, checked, and handed to the host.

use crate::bindings::imports::matrix::{
    EventError, Host, MediaMessage as WitMedia, RemoteEvent as WitEvent,
};
use crate::events::{EventSender, MediaSource, RemoteEvent};
use crate::state::PluginState;

/// The longest id (chat, message, user) the host accepts.
const MAX_ID: usize = 1024;
/// The longest message body, plain or HTML.
const MAX_BODY: usize = 64 << 10;
/// The most members a chat-resync may list.
const MAX_MEMBERS: usize = 10_000;

impl Host for PluginState {
    async fn queue_event(&mut self, event: WitEvent) -> wasmtime::Result<Result<(), EventError>> {
        Ok(self.queue(RemoteEvent::from(event)))
    }

    async fn queue_media(&mut self, message: WitMedia) -> wasmtime::Result<Result<(), EventError>> {
        Ok(self.queue(RemoteEvent::Media(message.into())))
    }
}

impl PluginState {
    /// Checks `event` and hands it to the host.
    fn queue(&mut self, event: RemoteEvent) -> Result<(), EventError> {
        let Some(login) = self.login().cloned() else {
            return Err(EventError::NoLogin);
        };
        if !self.budget.take_event() {
            return Err(EventError::Storage(format!(
                "more than {} events in one call: return, and queue the rest in the next call",
                crate::state::CallBudget::EVENTS
            )));
        }
        if let Err(message) = check(&event).and_then(|()| self.check_media(&event)) {
            return Err(EventError::Invalid(message));
        }
        if let RemoteEvent::BridgeState(state) = &event
            && state.state.needs_relogin()
        {
            self.ctx.signals.pause_timers = true;
        }
        match self.ctx.runtime.host.queue_event(&login, event) {
            Ok(()) => {
                self.ctx.signals.queued_events = true;
                self.ctx.counters.event_out();
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, %login, "failed to store a remote event");
                Err(EventError::Storage("the host's storage failed".into()))
            }
        }
    }

    /// A file must fit the plugin's media limit, and a URL to fetch must
    /// be one the plugin may reach.
    fn check_media(&self, event: &RemoteEvent) -> Result<(), String> {
        let RemoteEvent::Media(media) = event else {
            return Ok(());
        };
        let caps = &self.ctx.plugin.capabilities;
        let limit = caps.max_media_bytes;
        let size = match &media.attachment.source {
            MediaSource::Bytes(bytes) => Some(bytes.len() as u64),
            MediaSource::Url { url, .. } => {
                let parsed = url::Url::parse(url).map_err(|e| format!("bad media URL: {e}"))?;
                if !caps.http.iter().any(|pattern| pattern.matches(&parsed)) {
                    return Err(format!(
                        "{} is not granted to plugin {}",
                        parsed.origin().ascii_serialization(),
                        self.ctx.plugin.id()
                    ));
                }
                media.attachment.size
            }
        };
        if size.is_some_and(|size| size > limit) {
            return Err(format!(
                "files are limited to {limit} bytes for this plugin"
            ));
        }
        Ok(())
    }
}

fn id(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_ID {
        return Err(format!("{what} must have 1 to {MAX_ID} bytes"));
    }
    Ok(())
}

fn sender(sender: &EventSender) -> Result<(), String> {
    id("sender id", &sender.user.id)
}

fn body(text: &str, html: Option<&String>) -> Result<(), String> {
    if text.len() > MAX_BODY || html.is_some_and(|h| h.len() > MAX_BODY) {
        return Err(format!("message bodies are limited to {MAX_BODY} bytes"));
    }
    Ok(())
}

/// Refuses events the host would choke on, with a message for the plugin.
fn check(event: &RemoteEvent) -> Result<(), String> {
    match event {
        RemoteEvent::ChatResync(chat) => {
            id("chat id", &chat.chat_id)?;
            if chat.members.len() > MAX_MEMBERS {
                return Err(format!("a chat-resync lists at most {MAX_MEMBERS} members"));
            }
            for member in &chat.members {
                id("member id", &member.user.id)?;
            }
            Ok(())
        }
        RemoteEvent::Message(m) => {
            id("chat id", &m.chat_id)?;
            id("message id", &m.message_id)?;
            sender(&m.sender)?;
            body(&m.text, m.html.as_ref())
        }
        RemoteEvent::Media(m) => {
            id("chat id", &m.chat_id)?;
            id("message id", &m.message_id)?;
            sender(&m.sender)?;
            body(m.caption.as_deref().unwrap_or_default(), None)?;
            let a = &m.attachment;
            if a.file_name.is_empty() || a.file_name.len() > 255 || a.mime_type.len() > 255 {
                return Err("a file name has 1 to 255 bytes, a MIME type at most 255".into());
            }
            Ok(())
        }
        RemoteEvent::Edit(e) => {
            id("chat id", &e.chat_id)?;
            id("message id", &e.message_id)?;
            sender(&e.sender)?;
            body(&e.text, e.html.as_ref())
        }
        RemoteEvent::Delete(d) => {
            id("chat id", &d.chat_id)?;
            id("message id", &d.message_id)?;
            sender(&d.sender)
        }
        RemoteEvent::Reaction(r) => {
            id("chat id", &r.chat_id)?;
            id("message id", &r.message_id)?;
            id("reaction key", &r.key)?;
            sender(&r.sender)
        }
        RemoteEvent::Typing(t) => {
            id("chat id", &t.chat_id)?;
            sender(&t.sender)
        }
        RemoteEvent::ReadReceipt(r) => {
            id("chat id", &r.chat_id)?;
            id("message id", &r.up_to)?;
            sender(&r.sender)
        }
        RemoteEvent::BridgeState(state) => {
            if state.message.as_ref().is_some_and(|m| m.len() > 4096)
                || state.error_code.as_ref().is_some_and(|c| c.len() > 256)
            {
                return Err("bridge-state messages are limited to 4096 bytes, codes to 256".into());
            }
            Ok(())
        }
    }
}
