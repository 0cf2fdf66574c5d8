//! Conversions between the generated WIT types and the runtime's own, in
//! one place: the host never sees a generated type.

use crate::bindings::imports::matrix as wit;
use crate::bindings::{backfill, login_flow as wit_flow, media_handler, network_api};
use crate::connector::{MatrixEdit, MatrixMedia, MatrixMessage, MatrixReaction};
use crate::events::{
    Attachment, ChatKind, ChatMember, ChatResync, Delete, Edit, EventSender, MediaKind,
    MediaMessage, MediaSource, Message, Reaction, ReadReceipt, RemoteEvent, RemoteUser, StateKind,
    StateReport, Typing,
};
use crate::login_flow::{
    CompleteStep, CookieField, CookieSource, CookieSourceKind, CookiesStep, DisplayKind,
    DisplayStep, FieldKind, InputField, LoginStep, StepInput, StepParams,
};

fn user(user: wit::RemoteUser) -> RemoteUser {
    RemoteUser {
        id: user.id,
        display_name: user.display_name,
    }
}

fn sender(sender: wit::EventSender) -> EventSender {
    EventSender {
        user: user(sender.user),
        is_from_me: sender.is_from_me,
    }
}

impl From<wit::BridgeStateKind> for StateKind {
    fn from(kind: wit::BridgeStateKind) -> Self {
        match kind {
            wit::BridgeStateKind::Connecting => Self::Connecting,
            wit::BridgeStateKind::Connected => Self::Connected,
            wit::BridgeStateKind::TransientDisconnect => Self::TransientDisconnect,
            wit::BridgeStateKind::BadCredentials => Self::BadCredentials,
            wit::BridgeStateKind::UnknownError => Self::UnknownError,
            wit::BridgeStateKind::LoggedOut => Self::LoggedOut,
        }
    }
}

fn message(m: wit::Message) -> Message {
    Message {
        chat_id: m.chat_id,
        message_id: m.message_id,
        sender: sender(m.sender),
        timestamp_ms: m.timestamp_ms,
        stream_order: m.stream_order,
        text: m.text,
        html: m.html,
        reply_to: m.reply_to,
    }
}

impl From<wit::MediaMessage> for MediaMessage {
    fn from(m: wit::MediaMessage) -> Self {
        let a = m.attachment;
        Self {
            chat_id: m.chat_id,
            message_id: m.message_id,
            sender: sender(m.sender),
            timestamp_ms: m.timestamp_ms,
            stream_order: m.stream_order,
            caption: m.caption,
            reply_to: m.reply_to,
            attachment: Attachment {
                file_name: a.file_name,
                mime_type: a.mime_type,
                kind: match a.kind {
                    wit::MediaKind::Image => MediaKind::Image,
                    wit::MediaKind::Video => MediaKind::Video,
                    wit::MediaKind::Audio => MediaKind::Audio,
                    wit::MediaKind::File => MediaKind::File,
                },
                size: a.size,
                width: a.width,
                height: a.height,
                duration_ms: a.duration_ms,
                source: match a.source {
                    wit::MediaSource::Bytes(bytes) => MediaSource::Bytes(bytes),
                    wit::MediaSource::Url(u) => MediaSource::Url {
                        url: u.url,
                        headers: u.headers,
                    },
                },
            },
        }
    }
}

impl From<backfill::HistoryItem> for RemoteEvent {
    fn from(item: backfill::HistoryItem) -> Self {
        match item {
            backfill::HistoryItem::Message(m) => Self::Message(message(m)),
            backfill::HistoryItem::Media(m) => Self::Media(m.into()),
        }
    }
}

impl From<MatrixMedia> for media_handler::MatrixMedia {
    fn from(m: MatrixMedia) -> Self {
        Self {
            chat_id: m.chat_id,
            event_id: m.event_id,
            sender: m.sender,
            file_name: m.file_name,
            mime_type: m.mime_type,
            data: m.data,
            caption: m.caption,
            reply_to: m.reply_to,
            timestamp_ms: m.timestamp_ms,
        }
    }
}

impl From<wit::RemoteEvent> for RemoteEvent {
    fn from(event: wit::RemoteEvent) -> Self {
        match event {
            wit::RemoteEvent::ChatResync(c) => Self::ChatResync(ChatResync {
                chat_id: c.chat_id,
                name: c.name,
                topic: c.topic,
                kind: match c.kind {
                    wit::ChatKind::Direct => ChatKind::Direct,
                    wit::ChatKind::Group => ChatKind::Group,
                },
                members: c
                    .members
                    .into_iter()
                    .map(|m| ChatMember {
                        user: user(m.user),
                        is_me: m.is_me,
                    })
                    .collect(),
                create_portal: c.create_portal,
            }),
            wit::RemoteEvent::Message(m) => Self::Message(message(m)),
            wit::RemoteEvent::Edit(e) => Self::Edit(Edit {
                chat_id: e.chat_id,
                message_id: e.message_id,
                sender: sender(e.sender),
                timestamp_ms: e.timestamp_ms,
                text: e.text,
                html: e.html,
            }),
            wit::RemoteEvent::Delete(d) => Self::Delete(Delete {
                chat_id: d.chat_id,
                message_id: d.message_id,
                sender: sender(d.sender),
                timestamp_ms: d.timestamp_ms,
            }),
            wit::RemoteEvent::Reaction(r) => Self::Reaction(Reaction {
                chat_id: r.chat_id,
                message_id: r.message_id,
                sender: sender(r.sender),
                key: r.key,
                timestamp_ms: r.timestamp_ms,
                removed: r.removed,
            }),
            wit::RemoteEvent::Typing(t) => Self::Typing(Typing {
                chat_id: t.chat_id,
                sender: sender(t.sender),
                timeout_ms: t.timeout_ms,
            }),
            wit::RemoteEvent::ReadReceipt(r) => Self::ReadReceipt(ReadReceipt {
                chat_id: r.chat_id,
                sender: sender(r.sender),
                up_to: r.up_to,
                timestamp_ms: r.timestamp_ms,
            }),
            wit::RemoteEvent::BridgeState(s) => Self::BridgeState(StateReport {
                state: s.state.into(),
                error_code: s.error_code,
                message: s.message,
            }),
        }
    }
}

impl From<MatrixMessage> for network_api::MatrixMessage {
    fn from(m: MatrixMessage) -> Self {
        Self {
            chat_id: m.chat_id,
            event_id: m.event_id,
            sender: m.sender,
            text: m.text,
            html: m.html,
            reply_to: m.reply_to,
            timestamp_ms: m.timestamp_ms,
        }
    }
}

impl From<MatrixEdit> for network_api::MatrixEdit {
    fn from(e: MatrixEdit) -> Self {
        Self {
            chat_id: e.chat_id,
            message_id: e.message_id,
            text: e.text,
            html: e.html,
        }
    }
}

impl From<MatrixReaction> for network_api::MatrixReaction {
    fn from(r: MatrixReaction) -> Self {
        Self {
            chat_id: r.chat_id,
            message_id: r.message_id,
            key: r.key,
        }
    }
}

impl From<StepInput> for wit_flow::StepInput {
    fn from(input: StepInput) -> Self {
        match input {
            StepInput::UserInput(values) => Self::UserInput(values),
            StepInput::Cookies(values) => Self::Cookies(values),
            StepInput::Wait => Self::Wait,
        }
    }
}

impl From<wit_flow::LoginStep> for LoginStep {
    fn from(step: wit_flow::LoginStep) -> Self {
        let params = match step.params {
            wit_flow::StepParams::UserInput(fields) => StepParams::UserInput(
                fields
                    .into_iter()
                    .map(|f| InputField {
                        kind: match f.kind {
                            wit_flow::FieldKind::Username => FieldKind::Username,
                            wit_flow::FieldKind::Password => FieldKind::Password,
                            wit_flow::FieldKind::PhoneNumber => FieldKind::PhoneNumber,
                            wit_flow::FieldKind::Email => FieldKind::Email,
                            wit_flow::FieldKind::TwoFactorCode => FieldKind::TwoFactorCode,
                            wit_flow::FieldKind::Token => FieldKind::Token,
                            wit_flow::FieldKind::Url => FieldKind::Url,
                            wit_flow::FieldKind::Domain => FieldKind::Domain,
                            wit_flow::FieldKind::Select => FieldKind::Select,
                            wit_flow::FieldKind::CaptchaCode => FieldKind::CaptchaCode,
                        },
                        id: f.id,
                        name: f.name,
                        description: f.description,
                        default_value: f.default_value,
                        pattern: f.pattern,
                        options: f.options,
                    })
                    .collect(),
            ),
            wit_flow::StepParams::Cookies(c) => StepParams::Cookies(CookiesStep {
                url: c.url,
                user_agent: c.user_agent,
                fields: c
                    .fields
                    .into_iter()
                    .map(|f| CookieField {
                        id: f.id,
                        required: f.required,
                        sources: f
                            .sources
                            .into_iter()
                            .map(|s| CookieSource {
                                kind: match s.kind {
                                    wit_flow::CookieSourceKind::Cookie => CookieSourceKind::Cookie,
                                    wit_flow::CookieSourceKind::LocalStorage => {
                                        CookieSourceKind::LocalStorage
                                    }
                                    wit_flow::CookieSourceKind::RequestHeader => {
                                        CookieSourceKind::RequestHeader
                                    }
                                    wit_flow::CookieSourceKind::RequestBody => {
                                        CookieSourceKind::RequestBody
                                    }
                                    wit_flow::CookieSourceKind::Special => {
                                        CookieSourceKind::Special
                                    }
                                },
                                name: s.name,
                                request_url_regex: s.request_url_regex,
                                cookie_domain: s.cookie_domain,
                            })
                            .collect(),
                        pattern: f.pattern,
                    })
                    .collect(),
                extract_js: c.extract_js,
                wait_for_url_pattern: c.wait_for_url_pattern,
            }),
            wit_flow::StepParams::DisplayAndWait(d) => StepParams::DisplayAndWait(DisplayStep {
                kind: match d.kind {
                    wit_flow::DisplayKind::Qr => DisplayKind::Qr,
                    wit_flow::DisplayKind::Emoji => DisplayKind::Emoji,
                    wit_flow::DisplayKind::Code => DisplayKind::Code,
                    wit_flow::DisplayKind::Nothing => DisplayKind::Nothing,
                },
                data: d.data,
                image_url: d.image_url,
                poll_after_ms: d.poll_after_ms,
            }),
            wit_flow::StepParams::Complete(c) => StepParams::Complete(CompleteStep {
                login_id: c.login_id,
                remote_name: c.remote_name,
                metadata: c.metadata,
            }),
        };
        Self {
            step_id: step.step_id,
            instructions: step.instructions,
            params,
        }
    }
}
