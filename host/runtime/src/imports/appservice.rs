//! `weft:plugin/appservice`: Matrix accounts and rooms in a plugin's own
//! namespace. The host that embeds the runtime holds the appservice and
//! decides what each plugin was granted; this import only passes the
//! caller's plugin id along and bounds what it sends.

use std::sync::Arc;

use crate::bindings::appservice::{AppserviceError, Host, MatrixRefusal, RoomOptions};
use crate::services::{self, PluginAppservice};
use crate::state::PluginState;

/// Longer than any localpart, token or room id the homeserver issues.
const MAX_ARGUMENT: usize = 4096;

impl PluginState {
    fn appservice(&self) -> Result<Arc<dyn PluginAppservice>, AppserviceError> {
        self.ctx.runtime.host.appservice().ok_or_else(|| {
            AppserviceError::Denied("this host has no Matrix application service".into())
        })
    }

    /// Checks the arguments' sizes and takes what the call needs out of
    /// the store: the future it awaits must not borrow the store.
    fn prepare(
        &self,
        arguments: &[&str],
    ) -> Result<(Arc<dyn PluginAppservice>, String), AppserviceError> {
        if arguments.iter().any(|a| a.len() > MAX_ARGUMENT) {
            return Err(AppserviceError::Denied(format!(
                "an appservice argument is at most {MAX_ARGUMENT} bytes"
            )));
        }
        Ok((self.appservice()?, self.ctx.plugin.id().to_owned()))
    }
}

fn to_wit(error: services::AppserviceError) -> AppserviceError {
    match error {
        services::AppserviceError::Denied(m) => AppserviceError::Denied(m),
        services::AppserviceError::Unsupported(m) => AppserviceError::Unsupported(m),
        services::AppserviceError::Refused {
            status,
            errcode,
            message,
        } => AppserviceError::Refused(MatrixRefusal {
            status,
            errcode,
            message,
        }),
        services::AppserviceError::Unavailable(m) => AppserviceError::Unavailable(m),
    }
}

impl Host for PluginState {
    async fn server_name(&mut self) -> wasmtime::Result<String> {
        Ok(self
            .appservice()
            .map(|a| a.server_name())
            .unwrap_or_default())
    }

    async fn register_user(
        &mut self,
        localpart: String,
    ) -> wasmtime::Result<Result<Option<String>, AppserviceError>> {
        let (appservice, plugin) = match self.prepare(&[&localpart]) {
            Ok(prepared) => prepared,
            Err(error) => return Ok(Err(error)),
        };
        Ok(appservice
            .register_user(plugin, localpart)
            .await
            .map_err(to_wit))
    }

    async fn login_user(
        &mut self,
        localpart: String,
    ) -> wasmtime::Result<Result<String, AppserviceError>> {
        let (appservice, plugin) = match self.prepare(&[&localpart]) {
            Ok(prepared) => prepared,
            Err(error) => return Ok(Err(error)),
        };
        Ok(appservice
            .login_user(plugin, localpart)
            .await
            .map_err(to_wit))
    }

    async fn whoami(
        &mut self,
        access_token: String,
    ) -> wasmtime::Result<Result<Option<String>, AppserviceError>> {
        let (appservice, plugin) = match self.prepare(&[&access_token]) {
            Ok(prepared) => prepared,
            Err(error) => return Ok(Err(error)),
        };
        Ok(appservice
            .whoami(plugin, access_token)
            .await
            .map_err(to_wit))
    }

    async fn create_room(
        &mut self,
        options: RoomOptions,
    ) -> wasmtime::Result<Result<String, AppserviceError>> {
        let (appservice, plugin) =
            match self.prepare(&[&options.name, options.topic.as_deref().unwrap_or_default()]) {
                Ok(prepared) => prepared,
                Err(error) => return Ok(Err(error)),
            };
        Ok(appservice
            .create_room(plugin, options.name, options.topic)
            .await
            .map_err(to_wit))
    }

    async fn join_room(
        &mut self,
        room_id: String,
        localpart: String,
    ) -> wasmtime::Result<Result<(), AppserviceError>> {
        let (appservice, plugin) = match self.prepare(&[&room_id, &localpart]) {
            Ok(prepared) => prepared,
            Err(error) => return Ok(Err(error)),
        };
        Ok(appservice
            .join_room(plugin, room_id, localpart)
            .await
            .map_err(to_wit))
    }
}
