//! The host's side of the `appservice` import: Matrix accounts and rooms
//! for plugins, within what the operator granted each.
//!
//! A plugin granted `appservice` manages the users whose localparts match
//! its pattern (in full), which its registration claims exclusively; the
//! bot, the connectors' ghosts and every other user stay out of reach.
//! It may add its users only to rooms it created itself, so it can never
//! bring anyone into a portal. The plugin never sees the as_token.
//!
//! On a homeserver that delegates authentication (MSC3861 / MAS) an
//! appservice cannot get access tokens for its users: `/login` is gone
//! and registration must inhibit login. The host finds out at start
//! ([`PluginAccounts::detect_auth_mode`]), says so once for each plugin
//! that needs it, and answers such calls `unsupported` at once.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use futures::FutureExt;
use futures::future::BoxFuture;
use ruma::api::client::account::register::{self, LoginType, RegistrationKind};
use ruma::api::client::account::whoami;
use ruma::api::client::membership::join_room_by_id;
use ruma::api::client::room::create_room;
use ruma::api::client::session::login;
use ruma::api::client::uiaa::{MatrixUserIdentifier, UserIdentifier};
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use weft_runtime::plugin::LoadedPlugin;
use weft_runtime::{AppserviceError, PluginAppservice};

use super::Bridge;
use crate::matrix::client::HsError;

const AUTH_UNKNOWN: u8 = 0;
const AUTH_OWN: u8 = 1;
const AUTH_DELEGATED: u8 = 2;

/// The `appservice` import, served through the bridge's homeserver client.
pub struct PluginAccounts {
    bridge: Weak<Bridge>,
    auth_mode: AtomicU8,
}

impl PluginAccounts {
    /// Accounts served through `bridge` (held weakly: the bridge owns the
    /// registry that holds this).
    pub fn new(bridge: &Arc<Bridge>) -> Arc<Self> {
        Arc::new(Self {
            bridge: Arc::downgrade(bridge),
            auth_mode: AtomicU8::new(AUTH_UNKNOWN),
        })
    }

    /// Asks the homeserver whether it delegates authentication, at start
    /// (before plugins load); if it cannot tell yet, asks again every 30
    /// seconds in the background until it can.
    pub async fn detect_auth_mode(self: &Arc<Self>) {
        if self.try_detect().await {
            return;
        }
        let accounts = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                let Some(accounts) = accounts.upgrade() else {
                    return;
                };
                if accounts.try_detect().await {
                    return;
                }
            }
        });
    }

    /// One attempt; whether the mode is now known.
    async fn try_detect(&self) -> bool {
        let Some(bridge) = self.bridge.upgrade() else {
            return true;
        };
        match bridge.client.delegates_auth().await {
            Ok(delegated) => {
                let mode = if delegated { AUTH_DELEGATED } else { AUTH_OWN };
                let before = self.auth_mode.swap(mode, Ordering::AcqRel);
                if delegated {
                    tracing::info!("the homeserver delegates authentication (MSC3861 / MAS)");
                    // Plugins that loaded while the mode was unknown hear
                    // it now.
                    if before == AUTH_UNKNOWN {
                        for info in bridge.registry.plugins() {
                            if let Some(plugin) = bridge.registry.plugin(&info.id) {
                                self.plugin_current(&plugin);
                            }
                        }
                    }
                }
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot tell yet whether the homeserver delegates authentication; asking again in 30 s");
                false
            }
        }
    }

    /// Says at once, rather than on every request, when a plugin granted
    /// `appservice` cannot work with this homeserver.
    pub fn plugin_current(&self, plugin: &LoadedPlugin) {
        if self.delegated() && plugin.capabilities.appservice_users.is_some() {
            tracing::error!(plugin = plugin.id(), "{}", delegated_message(plugin.id()));
        }
    }

    fn delegated(&self) -> bool {
        self.auth_mode.load(Ordering::Acquire) == AUTH_DELEGATED
    }
}

fn delegated_message(plugin: &str) -> String {
    format!(
        "the homeserver delegates authentication (MSC3861 / Matrix Authentication Service): an appservice cannot obtain access tokens for its users there, so [plugin.{plugin}] appservice cannot issue Matrix logins; point [homeserver] url at a homeserver with its own authentication, or turn the grant off"
    )
}

/// What one call may act on, checked against the plugin's grant.
struct Granted {
    bridge: Arc<Bridge>,
    plugin: String,
    pattern: regex::Regex,
}

impl Granted {
    fn user(&self, localpart: &str) -> Result<OwnedUserId, AppserviceError> {
        let outside = || {
            AppserviceError::Denied(format!(
                "`{localpart}` is outside plugin {}'s users (`{}`)",
                self.plugin,
                self.pattern.as_str()
            ))
        };
        if !self.pattern.is_match(localpart) || localpart == self.bridge.namespaces.bot_localpart()
        {
            return Err(outside());
        }
        UserId::parse(format!("@{localpart}:{}", self.bridge.namespaces.domain))
            .map_err(|_| outside())
    }

    fn own_room(&self, room_id: &str) -> Result<OwnedRoomId, AppserviceError> {
        let denied = || {
            AppserviceError::Denied(format!(
                "room {room_id} was not created by plugin {}",
                self.plugin
            ))
        };
        let created = self
            .bridge
            .store
            .is_plugin_room(&self.plugin, room_id)
            .map_err(|e| AppserviceError::Unavailable(format!("storage: {e}")))?;
        if !created {
            return Err(denied());
        }
        OwnedRoomId::try_from(room_id).map_err(|_| denied())
    }
}

fn from_hs(error: HsError) -> AppserviceError {
    match error {
        HsError::Api {
            status,
            errcode,
            message,
            ..
        } if status < 500 && status != 429 => AppserviceError::Refused {
            status,
            errcode,
            message,
        },
        other => AppserviceError::Unavailable(other.to_string()),
    }
}

impl PluginAccounts {
    fn granted(&self, plugin: &str) -> Result<Granted, AppserviceError> {
        let bridge = self
            .bridge
            .upgrade()
            .ok_or_else(|| AppserviceError::Unavailable("the host is stopping".into()))?;
        let loaded = bridge
            .registry
            .plugin(plugin)
            .ok_or_else(|| AppserviceError::Denied(format!("plugin {plugin} is not loaded")))?;
        let pattern = loaded.capabilities.appservice_users.as_deref().ok_or_else(|| {
            AppserviceError::Denied(format!(
                "plugin {plugin} is not granted `appservice` (set it in [plugin.{plugin}] of the config)"
            ))
        })?;
        let pattern = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            AppserviceError::Denied(format!("plugin {plugin}'s appservice-users: {e}"))
        })?;
        Ok(Granted {
            bridge,
            plugin: plugin.to_owned(),
            pattern,
        })
    }

    fn tokens_available(&self, plugin: &str) -> Result<(), AppserviceError> {
        if self.delegated() {
            return Err(AppserviceError::Unsupported(delegated_message(plugin)));
        }
        Ok(())
    }
}

impl PluginAppservice for PluginAccounts {
    fn server_name(&self) -> String {
        self.bridge
            .upgrade()
            .map(|b| b.namespaces.domain.clone())
            .unwrap_or_default()
    }

    fn register_user(
        &self,
        plugin: String,
        localpart: String,
    ) -> BoxFuture<'static, Result<Option<String>, AppserviceError>> {
        let checked = self.tokens_available(&plugin).and_then(|()| {
            let granted = self.granted(&plugin)?;
            let user = granted.user(&localpart)?;
            Ok((granted, user))
        });
        async move {
            let (granted, user) = checked?;
            let mut request = register::v3::Request::new();
            request.username = Some(user.localpart().to_owned());
            request.login_type = Some(LoginType::ApplicationService);
            request.kind = RegistrationKind::User;
            match granted.bridge.client.send_as_appservice(request).await {
                Ok(response) => response.access_token.map(Some).ok_or_else(|| {
                    AppserviceError::Unsupported(
                        "the homeserver registered the user without a token".into(),
                    )
                }),
                Err(error) if error.errcode() == Some("M_USER_IN_USE") => Ok(None),
                Err(error) => Err(from_hs(error)),
            }
        }
        .boxed()
    }

    fn login_user(
        &self,
        plugin: String,
        localpart: String,
    ) -> BoxFuture<'static, Result<String, AppserviceError>> {
        let checked = self.tokens_available(&plugin).and_then(|()| {
            let granted = self.granted(&plugin)?;
            let user = granted.user(&localpart)?;
            Ok((granted, user))
        });
        async move {
            let (granted, user) = checked?;
            let identifier = UserIdentifier::Matrix(MatrixUserIdentifier::new(user.to_string()));
            let info = login::v3::ApplicationService::new(identifier);
            let request = login::v3::Request::new(login::v3::LoginInfo::ApplicationService(info));
            granted
                .bridge
                .client
                .send_as_appservice(request)
                .await
                .map(|response| response.access_token)
                .map_err(from_hs)
        }
        .boxed()
    }

    fn whoami(
        &self,
        plugin: String,
        access_token: String,
    ) -> BoxFuture<'static, Result<Option<String>, AppserviceError>> {
        let granted = self.granted(&plugin);
        async move {
            let granted = granted?;
            let answer = granted
                .bridge
                .client
                .send_as_token(whoami::v3::Request::new(), &access_token)
                .await;
            match answer {
                Ok(response) => {
                    // A token of someone else is not the plugin's business.
                    granted.user(response.user_id.localpart())?;
                    if response.user_id.server_name().as_str() != granted.bridge.namespaces.domain {
                        return Err(AppserviceError::Denied(
                            "the token belongs to a user of another server".into(),
                        ));
                    }
                    Ok(Some(response.user_id.to_string()))
                }
                Err(error) if error.errcode() == Some("M_UNKNOWN_TOKEN") => Ok(None),
                Err(error) => Err(from_hs(error)),
            }
        }
        .boxed()
    }

    fn create_room(
        &self,
        plugin: String,
        name: String,
        topic: Option<String>,
    ) -> BoxFuture<'static, Result<String, AppserviceError>> {
        let granted = self.granted(&plugin);
        async move {
            let granted = granted?;
            let mut request = create_room::v3::Request::new();
            request.name = Some(name);
            request.topic = topic;
            request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
            let room = granted
                .bridge
                .client
                .send(request, None)
                .await
                .map_err(from_hs)?
                .room_id;
            granted
                .bridge
                .store
                .put_plugin_room(&plugin, room.as_str())
                .map_err(|e| AppserviceError::Unavailable(format!("storage: {e}")))?;
            Ok(room.to_string())
        }
        .boxed()
    }

    fn join_room(
        &self,
        plugin: String,
        room_id: String,
        localpart: String,
    ) -> BoxFuture<'static, Result<(), AppserviceError>> {
        let checked = self.granted(&plugin).and_then(|granted| {
            let user = granted.user(&localpart)?;
            let room = granted.own_room(&room_id)?;
            Ok((granted, user, room))
        });
        async move {
            let (granted, user, room) = checked?;
            granted
                .bridge
                .invite(&room, &user)
                .await
                .map_err(|e| AppserviceError::Unavailable(e.to_string()))?;
            granted
                .bridge
                .client
                .send(join_room_by_id::v3::Request::new(room), Some(&user))
                .await
                .map_err(from_hs)?;
            Ok(())
        }
        .boxed()
    }
}
