//! The Mumble side of a Brmble server: a TLS connection to its control
//! port that presents the client certificate, authenticates, and reads up
//! to `ServerSync`, the message that carries the welcome text (and so the
//! Brmble marker). Nothing else of Mumble is spoken: no voice, no pings,
//! so the connection is closed right after.
//!
//! The control channel is a stream of frames: a 2-byte big-endian message
//! type, a 4-byte big-endian length, and a protobuf payload (Mumble.proto).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use crate::identity::{Identity, sha1_hex};
use crate::proto::{self, DecodeError};

/// The port Mumble servers listen on unless told otherwise.
pub const DEFAULT_PORT: u16 = 64738;

/// How long connecting, the TLS handshake and authentication may take
/// together by default. A server on the other side of the world answers
/// in well under a second; ten leaves room for a slow one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message accepted by default: 8 MiB, far above what the
/// messages before `ServerSync` carry (murmur caps a channel description
/// or the welcome text with images at 128 KiB by default), yet small
/// enough that a broken or hostile server cannot make the client allocate
/// gigabytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 << 20;

/// The client version announced: 1.3.4, what murmur 1.3 and later accept
/// without complaint, encoded as Mumble's `major << 16 | minor << 8 | patch`.
const CLIENT_VERSION: u64 = 1 << 16 | 3 << 8 | 4;

/// Message types of Mumble.proto, by their number on the wire.
mod message_type {
    pub(super) const VERSION: u16 = 0;
    pub(super) const AUTHENTICATE: u16 = 2;
    pub(super) const REJECT: u16 = 4;
    pub(super) const SERVER_SYNC: u16 = 5;
    pub(super) const USER_STATE: u16 = 9;
}

/// What the server said when the client was in: the end of Mumble's
/// connection handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSync {
    /// The session id the server gave this connection.
    pub session: u32,
    /// The server's welcome message, HTML, exactly as sent (empty if the
    /// server has none).
    pub welcome_text: String,
    /// The server's bandwidth limit per user, bits per second.
    pub max_bandwidth: Option<u32>,
    /// The client's permissions in the root channel (a bit set).
    pub permissions: Option<u64>,
    /// The SHA-1 of the client certificate as the server saw it (in the
    /// `UserState` of this session), if the server reported one: the hash
    /// the server knows this user by.
    pub client_cert_hash: Option<String>,
    /// The SHA-1 of the server's certificate, lowercase hex: what to pin
    /// next time with [`MumbleOptions::pin_server_cert`].
    pub server_cert_hash: String,
}

/// Why the server turned the client away (Mumble.proto `Reject.RejectType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// No reason given.
    None,
    /// The client's version is not accepted.
    WrongVersion,
    /// The username is not allowed (murmur checks it against a pattern).
    InvalidUsername,
    /// The registered user's password is wrong.
    WrongUserPassword,
    /// The server password is wrong.
    WrongServerPassword,
    /// Someone else is connected with this username.
    UsernameInUse,
    /// The server is full.
    ServerFull,
    /// The server requires a client certificate.
    NoCertificate,
    /// The server's external authenticator failed.
    AuthenticatorFail,
    /// A kind this client does not know.
    Other(u64),
}

impl RejectKind {
    fn from_wire(value: u64) -> Self {
        match value {
            0 => Self::None,
            1 => Self::WrongVersion,
            2 => Self::InvalidUsername,
            3 => Self::WrongUserPassword,
            4 => Self::WrongServerPassword,
            5 => Self::UsernameInUse,
            6 => Self::ServerFull,
            7 => Self::NoCertificate,
            8 => Self::AuthenticatorFail,
            other => Self::Other(other),
        }
    }
}

/// Why the exchange with the Mumble server failed.
#[derive(Debug, thiserror::Error)]
pub enum MumbleError {
    /// The TCP connection could not be made.
    #[error("failed to connect to {addr}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The host is neither a DNS name nor an IP address.
    #[error("`{0}` is not a valid server name")]
    InvalidHost(String),
    /// The pinned server certificate hash is not a SHA-1 in hex.
    #[error("`{0}` is not a certificate SHA-1 (40 hex digits, colons allowed)")]
    InvalidPin(String),
    /// The client certificate or key cannot be used for TLS.
    #[error("the client certificate cannot be used for TLS")]
    Identity(#[source] rustls::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake with {addr} failed")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What went wrong, from rustls.
        source: std::io::Error,
    },
    /// The server's certificate is not the pinned one; the handshake was
    /// abandoned before the username was sent.
    #[error("the server's certificate has SHA-1 {actual}, not the pinned {expected}")]
    ServerCertificateMismatch {
        /// The pinned hash.
        expected: String,
        /// The hash of the certificate the server presented.
        actual: String,
    },
    /// The server refused the client.
    #[error("the server rejected the connection ({kind:?}): {reason}")]
    Rejected {
        /// Why, as a code.
        kind: RejectKind,
        /// Why, in the server's words (may be empty).
        reason: String,
    },
    /// No `ServerSync` arrived in time.
    #[error("the server did not finish the handshake within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection before `ServerSync`.
    #[error("the server closed the connection before ServerSync")]
    Closed,
    /// The server announced a message over the size limit.
    #[error(
        "the server sent a {len}-byte message of type {message_type}, over the {limit}-byte limit"
    )]
    FrameTooLarge {
        /// The message type.
        message_type: u16,
        /// Its announced length.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// A message the client needs does not decode.
    #[error("the server's {message} message is malformed")]
    Malformed {
        /// Which message.
        message: &'static str,
        /// What is wrong with it.
        source: DecodeError,
    },
    /// Reading or writing the connection failed.
    #[error("the connection to the server failed")]
    Io(#[source] std::io::Error),
}

/// How to talk to a Mumble server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MumbleOptions {
    /// A limit on the whole exchange, from connecting to `ServerSync`.
    pub timeout: Duration,
    /// If set, the only server certificate accepted, by its SHA-1.
    /// Otherwise any certificate is: Mumble servers are normally
    /// self-signed, so there is no authority to check them against.
    pub server_cert_sha1: Option<String>,
    /// The largest message accepted.
    pub max_frame_len: usize,
}

impl Default for MumbleOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            server_cert_sha1: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl MumbleOptions {
    /// Sets the limit on the whole exchange.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Accepts only the server certificate whose SHA-1 is `sha1` (hex, any
    /// case, colons allowed).
    pub fn pin_server_cert(mut self, sha1: impl Into<String>) -> Self {
        self.server_cert_sha1 = Some(sha1.into());
        self
    }

    /// Sets the largest message accepted.
    pub fn max_frame_len(mut self, max_frame_len: usize) -> Self {
        self.max_frame_len = max_frame_len;
        self
    }
}

/// Connects to the Mumble server at `host:port` as `username` with
/// `identity`'s certificate, and returns its `ServerSync`, with the
/// default [`MumbleOptions`].
pub async fn mumble_welcome(
    host: &str,
    port: u16,
    identity: &Identity,
    username: &str,
) -> Result<ServerSync, MumbleError> {
    mumble_welcome_with(host, port, identity, username, &MumbleOptions::default()).await
}

/// [`mumble_welcome`] with explicit options.
pub async fn mumble_welcome_with(
    host: &str,
    port: u16,
    identity: &Identity,
    username: &str,
    options: &MumbleOptions,
) -> Result<ServerSync, MumbleError> {
    let pin = options
        .server_cert_sha1
        .as_deref()
        .map(normalize_sha1)
        .transpose()?;
    tokio::time::timeout(
        options.timeout,
        exchange(host, port, identity, username, pin, options.max_frame_len),
    )
    .await
    .map_err(|_| MumbleError::Timeout(options.timeout))?
}

async fn exchange(
    host: &str,
    port: u16,
    identity: &Identity,
    username: &str,
    pin: Option<String>,
    max_frame_len: usize,
) -> Result<ServerSync, MumbleError> {
    let addr = display_addr(host, port);
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| MumbleError::InvalidHost(host.to_owned()))?;
    let verifier = Arc::new(AnyServerCert::new(pin));
    let (chain, key) = identity.rustls_parts();
    let config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring has the cipher suites of TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(chain, key)
        .map_err(MumbleError::Identity)?;

    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|source| MumbleError::Connect {
            addr: addr.clone(),
            source,
        })?;
    // Small frames, one round trip each: Nagle would only add delay.
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = match connector.connect(server_name, tcp).await {
        Ok(tls) => tls,
        Err(source) => {
            return Err(match verifier.mismatch() {
                Some((expected, actual)) => {
                    MumbleError::ServerCertificateMismatch { expected, actual }
                }
                None => MumbleError::Tls { addr, source },
            });
        }
    };
    let server_cert_hash = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| sha1_hex(cert))
        .unwrap_or_default();

    let mut hello = Vec::new();
    put_frame(&mut hello, message_type::VERSION, &encode_version());
    put_frame(
        &mut hello,
        message_type::AUTHENTICATE,
        &encode_authenticate(username),
    );
    tls.write_all(&hello).await.map_err(MumbleError::Io)?;
    tls.flush().await.map_err(MumbleError::Io)?;

    let mut cert_hashes = BTreeMap::new();
    loop {
        let (kind, payload) = read_frame(&mut tls, max_frame_len).await?;
        match kind {
            message_type::REJECT => return Err(decode_reject(&payload)?),
            message_type::USER_STATE => {
                if let (Some(session), Some(hash)) = decode_user_state_hash(&payload)? {
                    cert_hashes.insert(session, hash);
                }
            }
            message_type::SERVER_SYNC => {
                let mut sync = decode_server_sync(&payload)?;
                sync.client_cert_hash = cert_hashes.remove(&sync.session);
                sync.server_cert_hash = server_cert_hash;
                // Say goodbye properly; the answer is already in hand, so
                // a failure here changes nothing.
                let _ = tls.shutdown().await;
                return Ok(sync);
            }
            // Version, CryptSetup, ChannelState, PermissionQuery, … and
            // anything newer: not needed to find the welcome text.
            _ => {}
        }
    }
}

/// `host:port`, with IPv6 addresses in brackets.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A pinned hash as 40 lowercase hex digits.
fn normalize_sha1(pin: &str) -> Result<String, MumbleError> {
    let hex: String = pin
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(MumbleError::InvalidPin(pin.to_owned()))
    }
}

fn put_frame(out: &mut Vec<u8>, message_type: u16, payload: &[u8]) {
    out.extend_from_slice(&message_type.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads one frame: its type and payload.
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    max_len: usize,
) -> Result<(u16, Vec<u8>), MumbleError> {
    let mut header = [0u8; 6];
    stream
        .read_exact(&mut header)
        .await
        .map_err(eof_is_closed)?;
    let message_type = u16::from_be_bytes([header[0], header[1]]);
    let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    let too_large = MumbleError::FrameTooLarge {
        message_type,
        len: u64::from(len),
        limit: max_len,
    };
    let len = usize::try_from(len).map_err(|_| too_large)?;
    if len > max_len {
        return Err(MumbleError::FrameTooLarge {
            message_type,
            len: len as u64,
            limit: max_len,
        });
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(eof_is_closed)?;
    Ok((message_type, payload))
}

fn eof_is_closed(error: std::io::Error) -> MumbleError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        MumbleError::Closed
    } else {
        MumbleError::Io(error)
    }
}

/// `Version { version = 1, release = 2, os = 3, os_version = 4 }`.
fn encode_version() -> Vec<u8> {
    let mut out = Vec::new();
    proto::put_varint_field(&mut out, 1, CLIENT_VERSION);
    proto::put_bytes_field(
        &mut out,
        2,
        concat!("brmble-client ", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    proto::put_bytes_field(&mut out, 3, std::env::consts::OS.as_bytes());
    out
}

/// `Authenticate { username = 1, opus = 5 }`: claiming Opus keeps murmur
/// from warning the other users that a client without it joined.
fn encode_authenticate(username: &str) -> Vec<u8> {
    let mut out = Vec::new();
    proto::put_bytes_field(&mut out, 1, username.as_bytes());
    proto::put_varint_field(&mut out, 5, 1);
    out
}

fn malformed(message: &'static str) -> impl Fn(DecodeError) -> MumbleError {
    move |source| MumbleError::Malformed { message, source }
}

/// `ServerSync { session = 1, max_bandwidth = 2, welcome_text = 3,
/// permissions = 4 }`; the hashes are filled in by the caller.
fn decode_server_sync(payload: &[u8]) -> Result<ServerSync, MumbleError> {
    let err = malformed("ServerSync");
    let mut sync = ServerSync {
        session: 0,
        welcome_text: String::new(),
        max_bandwidth: None,
        permissions: None,
        client_cert_hash: None,
        server_cert_hash: String::new(),
    };
    for field in proto::fields(payload) {
        match field.map_err(&err)? {
            (1, value) => {
                if let Some(v) = value.varint() {
                    sync.session = u32::try_from(v).map_err(|_| err(DecodeError::OutOfRange(1)))?;
                }
            }
            (2, value) => sync.max_bandwidth = value.varint().and_then(|v| u32::try_from(v).ok()),
            (3, value) => {
                if let Some(text) = value.string(3).map_err(&err)? {
                    text.clone_into(&mut sync.welcome_text);
                }
            }
            (4, value) => sync.permissions = value.varint(),
            _ => {}
        }
    }
    Ok(sync)
}

/// `Reject { type = 1, reason = 2 }`, as the error it is.
fn decode_reject(payload: &[u8]) -> Result<MumbleError, MumbleError> {
    let err = malformed("Reject");
    let mut kind = RejectKind::None;
    let mut reason = String::new();
    for field in proto::fields(payload) {
        match field.map_err(&err)? {
            (1, value) => {
                kind = value
                    .varint()
                    .map_or(RejectKind::None, RejectKind::from_wire)
            }
            (2, value) => {
                if let Some(text) = value.string(2).map_err(&err)? {
                    text.clone_into(&mut reason);
                }
            }
            _ => {}
        }
    }
    Ok(MumbleError::Rejected { kind, reason })
}

/// The session (field 1) and certificate hash (field 15) of a
/// `UserState`, when present.
fn decode_user_state_hash(payload: &[u8]) -> Result<(Option<u32>, Option<String>), MumbleError> {
    let err = malformed("UserState");
    let (mut session, mut hash) = (None, None);
    for field in proto::fields(payload) {
        match field.map_err(&err)? {
            (1, value) => session = value.varint().and_then(|v| u32::try_from(v).ok()),
            (15, value) => hash = value.string(15).map_err(&err)?.map(str::to_owned),
            _ => {}
        }
    }
    Ok((session, hash.filter(|h| !h.is_empty())))
}

/// Accepts any server certificate, or only the pinned one, while still
/// checking the handshake signatures (so the server must hold the key of
/// the certificate it shows). It remembers a pin mismatch so the caller
/// can report it as such rather than as a generic TLS failure.
struct AnyServerCert {
    provider: Arc<CryptoProvider>,
    pin: Option<String>,
    mismatch: Mutex<Option<String>>,
}

impl AnyServerCert {
    fn new(pin: Option<String>) -> Self {
        Self {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            pin,
            mismatch: Mutex::new(None),
        }
    }

    /// The pinned and the presented hash, if they differed.
    fn mismatch(&self) -> Option<(String, String)> {
        let actual = self.mismatch.lock().expect("not poisoned").clone()?;
        Some((self.pin.clone()?, actual))
    }
}

impl fmt::Debug for AnyServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyServerCert")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let actual = sha1_hex(end_entity);
        if &actual == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            *self.mismatch.lock().expect("not poisoned") = Some(actual);
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
