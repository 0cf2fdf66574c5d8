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
/// Appservice transactions already handled: txn id → time.
pub const TRANSACTIONS: &str = "transactions";
/// Matrix users of the bridge: user id → record (management room).
pub const USERS: &str = "users";
/// Management room id → its user.
pub const MANAGEMENT_ROOMS: &str = "management_rooms";
