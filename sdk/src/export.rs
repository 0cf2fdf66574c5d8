//! The glue between the generated `Guest` traits and the SDK's role traits.
//!
//! The registration macros name one of these adapter types; the adapter
//! forwards every export to the plugin's value, created with `Default` on
//! the first call and kept for the life of the instance.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::connector::{Connector, MatrixEdit, MatrixMessage, MatrixReaction};
use crate::credentials::{CredentialProvider, CredentialRequest};
use crate::login::Login;
use crate::tokens::TokenProvider;
use crate::wit::imports::weft::plugin::types::PluginError;

thread_local! {
    // A component instance is single-threaded and the component model
    // forbids re-entering an instance from a host call, so a `RefCell` is
    // never borrowed twice.
    static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Sends panic messages to the host before the abort: with `panic=abort`
/// on wasm there is no stderr, and the host puts this message in the trap
/// error it reports.
fn install_panic_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let fields = [("panic".to_owned(), "true".to_owned())];
            crate::log::write(crate::log::Level::Error, &info.to_string(), &fields);
        }));
    });
}

fn with_plugin<T: Default + 'static, R>(f: impl FnOnce(&mut T) -> R) -> R {
    install_panic_hook();
    PLUGIN.with(|slot| {
        let mut slot = slot.borrow_mut();
        let plugin = slot.get_or_insert_with(|| Box::new(T::default()));
        let plugin = plugin
            .downcast_mut::<T>()
            .expect("a component registers exactly one plugin type");
        f(plugin)
    })
}

/// The adapter the registration macros export: it forwards each exported
/// interface to the plugin's value. A connector links `network-api` and
/// `login-flow`, a login provider `login-flow` and `tokens`, a credential
/// provider `credentials`; each interface is implemented once here.
pub struct Export<T>(PhantomData<T>);

mod network_api {
    use super::{
        Connector, Export, MatrixEdit, MatrixMessage, MatrixReaction, PluginError, with_plugin,
    };
    use crate::wit::network_api_export as wit;

    impl<T: Connector + Default + 'static> wit::Guest for Export<T> {
        fn start() -> Result<(), PluginError> {
            with_plugin(|p: &mut T| p.start()).map_err(Into::into)
        }

        fn stop() {
            with_plugin(|p: &mut T| p.stop())
        }

        fn on_timer(name: String) -> Result<(), PluginError> {
            with_plugin(|p: &mut T| p.on_timer(&name)).map_err(Into::into)
        }

        fn handle_matrix_message(message: wit::MatrixMessage) -> Result<String, PluginError> {
            let message = MatrixMessage {
                chat_id: message.chat_id,
                event_id: message.event_id,
                sender: message.sender,
                text: message.text,
                html: message.html,
                reply_to: message.reply_to,
                timestamp_ms: message.timestamp_ms,
            };
            with_plugin(|p: &mut T| p.handle_matrix_message(message)).map_err(Into::into)
        }

        fn handle_matrix_edit(edit: wit::MatrixEdit) -> Result<(), PluginError> {
            let edit = MatrixEdit {
                chat_id: edit.chat_id,
                message_id: edit.message_id,
                text: edit.text,
                html: edit.html,
            };
            with_plugin(|p: &mut T| p.handle_matrix_edit(edit)).map_err(Into::into)
        }

        fn handle_matrix_reaction(reaction: wit::MatrixReaction) -> Result<String, PluginError> {
            let reaction = MatrixReaction {
                chat_id: reaction.chat_id,
                message_id: reaction.message_id,
                key: reaction.key,
            };
            with_plugin(|p: &mut T| p.handle_matrix_reaction(reaction)).map_err(Into::into)
        }

        fn handle_matrix_reaction_removal(
            chat_id: String,
            message_id: String,
            reaction_id: String,
        ) -> Result<(), PluginError> {
            with_plugin(|p: &mut T| {
                p.handle_matrix_reaction_removal(&chat_id, &message_id, &reaction_id)
            })
            .map_err(Into::into)
        }

        fn handle_matrix_redaction(chat_id: String, message_id: String) -> Result<(), PluginError> {
            with_plugin(|p: &mut T| p.handle_matrix_redaction(&chat_id, &message_id))
                .map_err(Into::into)
        }

        fn logout() -> Result<(), PluginError> {
            with_plugin(|p: &mut T| p.logout()).map_err(Into::into)
        }
    }
}

mod media_handler {
    use super::{Connector, Export, PluginError, with_plugin};
    use crate::connector::MatrixMedia;
    use crate::wit::media_handler_export as wit;

    impl<T: Connector + Default + 'static> wit::Guest for Export<T> {
        fn handle_matrix_media(media: wit::MatrixMedia) -> Result<String, PluginError> {
            let media = MatrixMedia {
                chat_id: media.chat_id,
                event_id: media.event_id,
                sender: media.sender,
                file_name: media.file_name,
                mime_type: media.mime_type,
                data: media.data,
                caption: media.caption,
                reply_to: media.reply_to,
                timestamp_ms: media.timestamp_ms,
            };
            with_plugin(|p: &mut T| p.handle_matrix_media(media)).map_err(Into::into)
        }
    }
}

mod receipt_handler {
    use super::{Connector, Export, PluginError, with_plugin};
    use crate::wit::receipt_handler_export as wit;

    impl<T: Connector + Default + 'static> wit::Guest for Export<T> {
        fn handle_matrix_read_receipt(chat_id: String, up_to: String) -> Result<(), PluginError> {
            with_plugin(|p: &mut T| p.handle_matrix_read_receipt(&chat_id, &up_to))
                .map_err(Into::into)
        }

        fn handle_matrix_typing(chat_id: String, typing: bool) -> Result<(), PluginError> {
            with_plugin(|p: &mut T| p.handle_matrix_typing(&chat_id, typing)).map_err(Into::into)
        }
    }
}

mod backfill {
    use super::{Connector, Export, PluginError, with_plugin};
    use crate::wit::backfill_export as wit;

    impl<T: Connector + Default + 'static> wit::Guest for Export<T> {
        fn fetch_history(
            chat_id: String,
            limit: u32,
        ) -> Result<Vec<wit::HistoryItem>, PluginError> {
            with_plugin(|p: &mut T| p.fetch_history(&chat_id, limit)).map_err(Into::into)
        }
    }
}

mod login_flow {
    use super::{Export, Login, PluginError, with_plugin};
    use crate::wit::login_flow_export as wit;

    impl<T: Login + Default + 'static> wit::Guest for Export<T> {
        fn start(flow_id: String, relogin: Option<String>) -> Result<wit::LoginStep, PluginError> {
            with_plugin(|p: &mut T| p.login_start(&flow_id, relogin.as_deref()))
                .map(Into::into)
                .map_err(Into::into)
        }

        fn submit(step_id: String, input: wit::StepInput) -> Result<wit::LoginStep, PluginError> {
            with_plugin(|p: &mut T| p.login_submit(&step_id, input.into()))
                .map(Into::into)
                .map_err(Into::into)
        }

        fn cancel() {
            with_plugin(|p: &mut T| p.login_cancel())
        }
    }
}

mod provider_login {
    use super::{Export, Login, PluginError, with_plugin};
    use crate::login::ProviderGrant;
    use crate::wit::provider_login_export as wit;

    impl<T: Login + Default + 'static> wit::Guest for Export<T> {
        fn finish(
            flow_id: String,
            grant: wit::ProviderGrant,
            relogin: Option<String>,
        ) -> Result<wit::Completion, PluginError> {
            let grant = ProviderGrant {
                provider: grant.provider,
                account_id: grant.account_id,
                account_name: grant.account_name,
                material: grant.material,
            };
            with_plugin(|p: &mut T| p.finish_provider_login(&flow_id, grant, relogin.as_deref()))
                .map(|c| wit::Completion {
                    login_id: c.login_id,
                    remote_name: c.remote_name,
                    metadata: c.metadata,
                })
                .map_err(Into::into)
        }
    }
}

mod tokens {
    use super::{Export, TokenProvider, with_plugin};
    use crate::wit::tokens_export as wit;

    impl<T: TokenProvider + Default + 'static> wit::Guest for Export<T> {
        fn from_captured(
            material: String,
            scopes: Vec<String>,
        ) -> Result<wit::TokenSet, wit::TokenError> {
            with_plugin(|p: &mut T| p.tokens_from_captured(&material, &scopes))
                .map(Into::into)
                .map_err(Into::into)
        }

        fn refresh(
            refresh_token: String,
            scopes: Vec<String>,
        ) -> Result<wit::TokenSet, wit::TokenError> {
            with_plugin(|p: &mut T| p.refresh(&refresh_token, &scopes))
                .map(Into::into)
                .map_err(Into::into)
        }
    }
}

mod credentials {
    use super::{CredentialProvider, CredentialRequest, Export, PluginError, with_plugin};
    use crate::wit::credentials::exports::weft::plugin::credentials as wit;

    impl<T: CredentialProvider + Default + 'static> wit::Guest for Export<T> {
        fn issue(request: wit::CredentialRequest) -> Result<wit::Credential, PluginError> {
            let request = CredentialRequest {
                subject: request.subject,
                claims: request.claims,
            };
            with_plugin(|p: &mut T| p.issue(request))
                .map(|c| wit::Credential {
                    user_id: c.user_id,
                    access_token: c.access_token,
                    homeserver_url: c.homeserver_url,
                    extra: c.extra,
                })
                .map_err(Into::into)
        }
    }
}

mod http_handler {
    use super::{CredentialProvider, Export, PluginError, with_plugin};
    use crate::routes::Request;
    use crate::wit::http_handler::exports::weft::plugin::http_handler as wit;

    impl<T: CredentialProvider + Default + 'static> wit::Guest for Export<T> {
        fn handle(request: wit::IncomingRequest) -> Result<wit::OutgoingResponse, PluginError> {
            let request = Request {
                method: request.method,
                path: request.path,
                query: request.query,
                headers: request.headers,
                body: request.body,
                client_address: request.client_address,
                client_certificate_sha1: request.client_certificate_sha1,
            };
            with_plugin(|p: &mut T| p.handle_request(request))
                .map(|r| wit::OutgoingResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                })
                .map_err(Into::into)
        }
    }
}
