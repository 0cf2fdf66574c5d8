// oidc-provider standing in for the Matrix Authentication Service (MAS) in
// front of a Synapse in MAS mode (`matrix_authentication_service:` in
// homeserver.yaml), for the tests (tests/support/mas.rs starts it).
//
//   node server.mjs CONFIG.json
//
// CONFIG.json (written by the Rust side):
//   {
//     "port": 8080,                       // listens on 127.0.0.1
//     "issuer": "http://127.0.0.1:8080/",
//     "homeserver": "http://127.0.0.1:8008/",   // the default resource
//     "account_management_uri": "http://127.0.0.1:8080/account",
//     "introspection": { "client_id": "...", "secret": "..." },
//     "registration_token": "...",
//     "clients": [
//       { "client_id": "...", "client_secret": "...", "localpart": "weftbot", "admin": true }
//     ]
//   }
//
// What Synapse needs of MAS, and how it is met here:
// - Discovery at /.well-known/openid-configuration with
//   `account_management_uri`; token, introspection and revocation at
//   /oauth2/token, /oauth2/introspect and /oauth2/revoke.
// - Synapse authenticates its introspection with
//   `Authorization: Bearer <introspection.secret>`: rewritten here into
//   client_secret_basic for the static client `introspection.client_id`.
// - Introspection must answer with `scope` holding
//   `urn:matrix:client:api:*` and a `urn:matrix:client:device:<ID>`, and with
//   `username` (the Matrix localpart). The requested `urn:matrix:*` scopes
//   survive through a resource server (the homeserver) whose tokens are
//   opaque (introspectable); `username` is an extra token claim: the
//   `localpart` of the client the token was issued to.
//
// Clients: the static ones of the config (client_credentials,
// client_secret_basic), and one per test user registered dynamically
// (POST /reg with `Authorization: Bearer <registration_token>` and the
// extra metadata `matrix_localpart`). A client may revoke its own tokens; an
// `admin` client may revoke any.
//
// It prints `ready <issuer>` on stdout once it listens, logs to stderr, and
// exits when its stdin closes or its parent dies, so no server outlives the
// test that started it.

import { readFileSync } from 'node:fs';
import { Provider } from 'oidc-provider';

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node server.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));

// Exit with the parent: when the pipe to it closes, or when it is gone
// (re-parented to init or a subreaper).
const parent = process.ppid;
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 500).unref();

const MATRIX_SCOPE = /^urn:(matrix:client|matrix:org\.matrix\.msc2967\.client):/;
const admins = new Set(config.clients.filter((c) => c.admin).map((c) => c.client_id));
// Per-client access-token lifetimes (seconds), where a client sets one.
const ttls = new Map(config.clients.filter((c) => c.token_ttl).map((c) => [c.client_id, c.token_ttl]));

const staticClient = ({ client_id, client_secret, localpart }) => ({
  client_id,
  client_secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  ...(localpart ? { matrix_localpart: localpart } : {}),
});

const provider = new Provider(config.issuer, {
  clients: [
    staticClient({
      client_id: config.introspection.client_id,
      client_secret: config.introspection.secret,
    }),
    ...config.clients.map(staticClient),
  ],
  extraClientMetadata: {
    properties: ['matrix_localpart'],
    validator(_ctx, key, value) {
      if (key === 'matrix_localpart' && value !== undefined && !/^[a-z0-9._=\-/+]+$/.test(value)) {
        throw new Error('matrix_localpart must be a Matrix localpart');
      }
    },
  },
  routes: {
    token: '/oauth2/token',
    introspection: '/oauth2/introspect',
    revocation: '/oauth2/revoke',
    registration: '/reg',
  },
  discovery: {
    account_management_uri: config.account_management_uri,
    account_management_actions_supported: [
      'org.matrix.profile',
      'org.matrix.sessions_list',
      'org.matrix.session_view',
      'org.matrix.session_end',
    ],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      allowedPolicy: async () => true,
    },
    revocation: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) =>
        client.clientId === token.clientId || admins.has(client.clientId),
    },
    registration: {
      enabled: true,
      initialAccessToken: config.registration_token,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => config.homeserver,
      useGrantedResource: async () => true,
      // The homeserver accepts whichever Matrix scopes were asked for, and
      // its tokens are opaque (oidc-provider introspects only those).
      getResourceServerInfo: async (ctx, _resource, client) => ({
        scope: String(ctx.oidc.params.scope ?? '')
          .split(' ')
          .filter((scope) => MATRIX_SCOPE.test(scope))
          .join(' '),
        accessTokenFormat: 'opaque',
        accessTokenTTL: ttls.get(client.clientId) ?? 3600,
      }),
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const client = ctx?.oidc?.client?.clientId === token.clientId
      ? ctx.oidc.client
      : await provider.Client.find(token.clientId);
    const localpart = client?.matrix_localpart;
    return localpart ? { username: localpart } : undefined;
  },
  ttl: {
    ClientCredentials: (_ctx, _token, client) => ttls.get(client.clientId) ?? 3600,
    AccessToken: 3600,
  },
});

// Synapse's `Bearer <shared secret>` on introspection, as the static
// introspection client's client_secret_basic.
const synapseAuth = `Bearer ${config.introspection.secret}`;
const basic = (id, secret) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
provider.use(async (ctx, next) => {
  if (ctx.path === '/oauth2/introspect' && ctx.get('authorization') === synapseAuth) {
    ctx.req.headers.authorization = basic(config.introspection.client_id, config.introspection.secret);
  }
  await next();
});

provider.on('server_error', (_ctx, error) => console.error('server_error', error));

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`ready ${config.issuer}`);
});
server.on('error', (error) => {
  console.error(error);
  process.exit(1);
});
