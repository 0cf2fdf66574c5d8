//! The names of the host's trees, in one place so that none is reused by
//! accident. (The runtime names its own: `plugin_kv` and `timers`.)

/// UserLogin records: (plugin, login id) → record.
pub const LOGINS: &str = "logins";
/// Remote events waiting to be bridged: (plugin, login, seq) → event.
pub const OUTBOX: &str = "outbox";
/// Remote events that could not be bridged: (plugin, login, seq) → entry.
pub const DEAD_LETTERS: &str = "dead_letters";
/// Portals: (plugin, chat id, receiver) → portal record.
pub const PORTALS: &str = "portals";
/// Room id → portal key.
pub const ROOM_PORTAL: &str = "room_portal";
/// Ghosts: Matrix user id → ghost record.
pub const GHOSTS: &str = "ghosts";
/// Bridged messages: (portal, remote message id) → Matrix event.
pub const MESSAGE_BY_REMOTE: &str = "message_by_remote";
/// Bridged messages: Matrix event id → (portal, remote message id).
pub const MESSAGE_BY_EVENT: &str = "message_by_event";
/// Matrix events handed to a connector: ("event", event id) → time. (The
/// tree's name is from when it also held transaction ids.)
pub const DISPATCHED: &str = "transactions";
/// Matrix users of the bridge: user id → record (management room).
pub const USERS: &str = "users";
/// Management room id → its user.
pub const MANAGEMENT_ROOMS: &str = "management_rooms";
/// Matrix events waiting to be handled: (room, seq) → event.
pub const INBOUND: &str = "inbound";
/// Matrix events already queued: event id → time.
pub const INBOUND_SEEN: &str = "inbound_seen";
/// Matrix events that could not be handled: (room, seq) → entry.
pub const INBOUND_DEAD: &str = "inbound_dead";
/// Rooms plugins created through the `appservice` import: (plugin, room
/// id) → creation time (ms).
pub const PLUGIN_ROOMS: &str = "plugin_rooms";
