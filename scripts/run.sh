#!/usr/bin/env bash
# Runs a working bridge on this machine: a local Synapse (from the
# project's venv), the echo chat service with two accounts, the fake
# Teams (examples/fake-teams: Teams and the Microsoft identity platform,
# with two accounts), a Mumble server whose welcome text points at the
# Brmble provider, and weft with the echo connector, the Teams connector,
# the MSAL login provider and the Brmble credential provider loaded from
# its plugins directory on the embedded sled database. Prints how to log
# in with any Matrix client, and how to try Brmble with its example client.
#
# Everything lives in .dev/ (delete it to start over). Ctrl-C stops it all.
# Ports: WEFT_HS_PORT (8008), WEFT_AS_PORT (29300), WEFT_ADMIN_PORT
# (29380), WEFT_ECHO_PORT (8090), WEFT_TEAMS_PORT (8095), WEFT_MUMBLE_PORT
# (64738).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

HS_PORT="${WEFT_HS_PORT:-8008}"
AS_PORT="${WEFT_AS_PORT:-29300}"
ADMIN_PORT="${WEFT_ADMIN_PORT:-29380}"
ECHO_PORT="${WEFT_ECHO_PORT:-8090}"
TEAMS_PORT="${WEFT_TEAMS_PORT:-8095}"
MUMBLE_PORT="${WEFT_MUMBLE_PORT:-64738}"
DEV="$ROOT/.dev"
MATRIX_USER="me"
MATRIX_PASSWORD="weft-demo-password"

scripts/setup.sh --demo
step() { printf '\n==> %s\n' "$*"; }

step "building weft, the echo service, the fake Teams, the Brmble client and the echo, Teams, MSAL and Brmble plugins"
# The whole workspace, as scripts/test.sh builds it: the same features,
# so one build serves both.
cargo build --workspace --locked
cargo weft build -p echo -p msal -p teams -p brmble
# Where cargo put them: CARGO_TARGET_DIR if set (a shared target dir).
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="$TARGET/debug/weft"
ECHO_SERVICE="$TARGET/debug/echo-service"
FAKE_TEAMS="$TARGET/debug/fake-teams"
BRMBLE_CLIENT="$TARGET/debug/brmble-client"

mkdir -p "$DEV/plugins" "$DEV/synapse/media"
for plugin in echo msal teams brmble; do
  cp "$TARGET/plugins/$plugin.wasm" "$DEV/plugins/$plugin.wasm"
done
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [ ! -f "$DEV/weft.toml" ]; then
  cat > "$DEV/weft.toml" <<EOF
# The demo's config; see README.md for every setting.
data-dir = "data"

[plugins]
dir = "plugins"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "$(secret)"

[homeserver]
url = "http://127.0.0.1:$HS_PORT"
domain = "localhost"

[appservice]
listen = "127.0.0.1:$AS_PORT"
address = "http://127.0.0.1:$AS_PORT"
registration = "registration.yaml"

[provisioning]
shared-secret = "$(secret)"

[plugin.echo]
http = ["http://127.0.0.1:*"]
private-networks = true

[plugin.echo.settings]
base-url = "http://127.0.0.1:$ECHO_PORT"
poll-interval-ms = 1000
EOF
fi
# The Teams connector and its login provider, both pointed at the fake
# Teams. Added to a config without them (a fresh one, or one from a run
# before they were part of the demo); a section already there is left as
# it is.
has_plugin() { grep -Eq "^[[:space:]]*\[plugin\.$1[].]" "$DEV/weft.toml"; }
if ! has_plugin msal; then
  cat >> "$DEV/weft.toml" <<EOF

[plugin.msal]
http = ["http://127.0.0.1:*"]
private-networks = true

[plugin.msal.settings]
authority-url = "http://127.0.0.1:$TEAMS_PORT"
web-url = "http://127.0.0.1:$TEAMS_PORT/fake"
EOF
fi
if ! has_plugin teams; then
  cat >> "$DEV/weft.toml" <<EOF

[plugin.teams]
http = ["http://127.0.0.1:*"]
private-networks = true

[plugin.teams.settings]
auth-url = "http://127.0.0.1:$TEAMS_PORT/api/auth"
chat-service-url = "http://127.0.0.1:$TEAMS_PORT"
media-url = "http://127.0.0.1:$TEAMS_PORT"
poll-interval-ms = 2000
discovery-interval-ms = 10000
EOF
fi
# Configs written before Teams had the `media-url` setting: its default
# (Skype's media service) is not granted here, so point it at the fake too.
if has_plugin teams && ! grep -q '^media-url' "$DEV/weft.toml"; then
  sed -i "s|^chat-service-url = \"http://127.0.0.1:$TEAMS_PORT\"\$|&\nmedia-url = \"http://127.0.0.1:$TEAMS_PORT\"|" "$DEV/weft.toml"
fi
# The Brmble credential provider: its routes on the appservice listener,
# its users (@<number>:localhost) through the appservice.
if ! has_plugin brmble; then
  cat >> "$DEV/weft.toml" <<EOF

[plugin.brmble]
appservice = true

[plugin.brmble.routes]
prefix = "/brmble"

[plugin.brmble.settings]
mumble-host = "127.0.0.1"
mumble-port = $MUMBLE_PORT
homeserver-url = "http://127.0.0.1:$HS_PORT"
channels = '{"1": "Lobby", "2": "Music"}'
EOF
fi
# Synapse (started below) reads the registration at startup.
"$WEFT" --config "$DEV/weft.toml" generate-registration >/dev/null

if [ ! -f "$DEV/synapse/homeserver.yaml" ]; then
  .venv-synapse/bin/generate_signing_key -o "$DEV/synapse/signing.key"
  LIMIT="{per_second: 1000, burst_count: 1000}"
  cat > "$DEV/synapse/log.yaml" <<EOF
version: 1
formatters: {precise: {format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}
handlers: {file: {class: logging.FileHandler, formatter: precise, filename: $DEV/synapse/homeserver.log}}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
EOF
  cat > "$DEV/synapse/homeserver.yaml" <<EOF
server_name: "localhost"
public_baseurl: "http://127.0.0.1:$HS_PORT/"
pid_file: "$DEV/synapse/homeserver.pid"
listeners:
  - {port: $HS_PORT, bind_addresses: ["127.0.0.1"], type: http, tls: false, x_forwarded: false, resources: [{names: [client], compress: false}]}
database: {name: sqlite3, args: {database: "$DEV/synapse/homeserver.db"}}
log_config: "$DEV/synapse/log.yaml"
media_store_path: "$DEV/synapse/media"
signing_key_path: "$DEV/synapse/signing.key"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
registration_shared_secret: "$(secret)"
macaroon_secret_key: "$(secret)"
form_secret: "$(secret)"
enable_registration: false
presence: {enabled: false}
app_service_config_files: ["$DEV/registration.yaml"]
rc_message: $LIMIT
rc_registration: $LIMIT
rc_login: {address: $LIMIT, account: $LIMIT, failed_attempts: $LIMIT}
rc_joins: {local: $LIMIT, remote: $LIMIT}
rc_room_creation: $LIMIT
EOF
fi

PIDS=()
# Stops the newest first: weft before the servers it talks to, so it
# shuts down cleanly instead of retrying a homeserver that is gone.
cleanup() {
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[$i]}" 2>/dev/null || true
    if [ "$i" -eq $((${#PIDS[@]} - 1)) ]; then
      # weft flushes and stops its logins; give it a moment.
      for _ in $(seq 1 50); do kill -0 "${PIDS[$i]}" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

step "starting Synapse on 127.0.0.1:$HS_PORT (log: .dev/synapse/homeserver.log)"
.venv-synapse/bin/python -m synapse.app.homeserver --config-path "$DEV/synapse/homeserver.yaml" \
  > "$DEV/synapse/stdout.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$HS_PORT/_matrix/client/versions" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$HS_PORT/_matrix/client/versions" >/dev/null || {
  echo "Synapse did not start; see .dev/synapse/stdout.log" >&2; exit 1; }
.venv-synapse/bin/register_new_matrix_user -c "$DEV/synapse/homeserver.yaml" \
  -u "$MATRIX_USER" -p "$MATRIX_PASSWORD" --no-admin "http://127.0.0.1:$HS_PORT" >/dev/null 2>&1 || true

step "starting the echo service on 127.0.0.1:$ECHO_PORT"
"$ECHO_SERVICE" --listen "127.0.0.1:$ECHO_PORT" --user alice:alice-password:Alice \
  --user bob:bob-password:Bob --clock-secs 60 --state-file "$DEV/echo-service.json" \
  > "$DEV/echo-service.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$ECHO_PORT/api/chats" && break
  sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$ECHO_PORT/api/chats" || {
  echo "the echo service did not start; see .dev/echo-service.log" >&2; exit 1; }

step "starting the fake Teams on 127.0.0.1:$TEAMS_PORT (log: .dev/fake-teams.log)"
"$FAKE_TEAMS" --listen "127.0.0.1:$TEAMS_PORT" --state "$DEV/fake-teams.json" \
  > "$DEV/fake-teams.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$TEAMS_PORT/fake" && break
  sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$TEAMS_PORT/fake" || {
  echo "the fake Teams did not start; see .dev/fake-teams.log" >&2; exit 1; }

BRMBLE_NOTE="Brmble needs murmurd (Debian's mumble-server): not installed, so skipped."
if [ -x /usr/sbin/murmurd ]; then
  step "starting murmurd on 127.0.0.1:$MUMBLE_PORT (log: .dev/murmur/murmur.log)"
  mkdir -p "$DEV/murmur"
  # murmurd started as root runs as mumble-server: its directory is that user's.
  if [ "$(id -u)" -eq 0 ] && id mumble-server >/dev/null 2>&1; then
    chown mumble-server: "$DEV/murmur"
  fi
  cat > "$DEV/murmur/murmur.ini" <<EOF
database=$DEV/murmur/murmur.sqlite
host=127.0.0.1
port=$MUMBLE_PORT
logfile=
pidfile=
bonjour=false
welcometext="Welcome to the weft demo!<br/><!--brmble:{\\"apiUrl\\":\\"http://127.0.0.1:$AS_PORT/brmble\\"}-->"
EOF
  if [ "$(id -u)" -eq 0 ]; then echo "uname=mumble-server" >> "$DEV/murmur/murmur.ini"; fi
  /usr/sbin/murmurd -ini "$DEV/murmur/murmur.ini" -fg > "$DEV/murmur/murmur.log" 2>&1 &
  PIDS+=($!)
  BRMBLE_NOTE="Brmble (a Mumble server whose users get Matrix accounts): the example client
finds the API in murmur's welcome text (flow A), gets its Matrix account and
says hello in the Lobby's room:
  $BRMBLE_CLIENT --identity .dev/brmble-identity --mumble 127.0.0.1:$MUMBLE_PORT --username you --say hello --channel 1
(or start from the API, flow B: --api-url http://127.0.0.1:$AS_PORT/brmble).
The message is in the Brmble user's rooms: log in to Matrix with the
accessToken the client prints to see it (the demo user is not a member)."
fi

cat <<EOF

weft starts now (ready when it logs "weft is running"). Log in with any
Matrix client:
  homeserver   http://127.0.0.1:$HS_PORT   (server name: localhost)
  user         @$MATRIX_USER:localhost
  password     $MATRIX_PASSWORD

Then start a direct chat with @weftbot:localhost and send:
  login echo:password      (echo account: alice / alice-password, or bob / bob-password)
or, to try the device-code flow:
  login echo:code          then approve the code it shows:
    curl -X POST http://127.0.0.1:$ECHO_PORT/api/device-code/approve \\
      -H 'content-type: application/json' \\
      -d '{"code":"<CODE>","username":"alice","password":"alice-password"}'
Your echo chats arrive as room invites: accept them. Each starts with its
recent history. Write in "Echo bot" and the echo bot reads and answers;
send it a file and it sends the file back. Log in to both accounts to see
each login get its own rooms.

Microsoft Teams runs against the fake Teams (accounts alice and bob;
all of it at http://127.0.0.1:$TEAMS_PORT/fake). In the same chat with the bot:
  login teams:device-code  the bot shows a code: enter it at
    http://127.0.0.1:$TEAMS_PORT/fake/devicelogin and sign in as alice or bob
  login teams:msal-helper  the bot gives a link to a login page: open it, copy
    the session from http://127.0.0.1:$TEAMS_PORT/fake/session/bob (or /alice)
    and paste it there
Each Teams account gets its own rooms. Write in "Teams Echo" and the echo
account answers. To write as someone on the Teams side (Bob, say), use the
forms under "Chats" at http://127.0.0.1:$TEAMS_PORT/fake. Everything the
fake Teams holds, messages from Matrix included, is in .dev/fake-teams.json.

$BRMBLE_NOTE

Operators: $WEFT --config .dev/weft.toml plugin list   (or: login list)
Stop with Ctrl-C.

EOF
step "running weft"
RUST_LOG="${RUST_LOG:-info}" "$WEFT" --config "$DEV/weft.toml" run &
PIDS+=($!)
wait "${PIDS[-1]}"
