//! The Mumble exchange against a scripted TLS server on loopback (the
//! integration tests run it against a real murmur), and the message codecs
//! on their own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::DistinguishedName;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::server::TlsStream;

use super::{
    MumbleError, MumbleOptions, RejectKind, decode_reject, decode_server_sync,
    decode_user_state_hash, encode_authenticate, message_type, mumble_welcome_with, put_frame,
    read_frame,
};
use crate::identity::{Identity, sha1_hex};
use crate::proto::{self, Value};

/// Accepts any client certificate but asks for one, as murmur does.
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS server on loopback that serves one connection with `script`.
/// Returns its address, its identity, and what the script returns.
async fn scripted_server<T, F, Fut>(script: F) -> (SocketAddr, Identity, oneshot::Receiver<T>)
where
    T: Send + 'static,
    F: FnOnce(Result<TlsStream<TcpStream>, std::io::Error>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
{
    let identity = Identity::generate("test server").unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = identity.rustls_parts();
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(AnyClientCert(provider)))
        .with_single_cert(chain, key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (done, result) = oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = done.send(script(acceptor.accept(tcp).await).await);
    });
    (addr, identity, result)
}

fn frame(message_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_frame(&mut out, message_type, payload);
    out
}

fn server_sync(session: u32, welcome_text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    proto::put_varint_field(&mut out, 1, session.into());
    proto::put_varint_field(&mut out, 2, 72000);
    proto::put_bytes_field(&mut out, 3, welcome_text.as_bytes());
    proto::put_varint_field(&mut out, 4, 0x0f07_0e0f);
    out
}

fn user_state(session: u32, name: &str, hash: &str) -> Vec<u8> {
    let mut out = Vec::new();
    proto::put_varint_field(&mut out, 1, session.into());
    proto::put_bytes_field(&mut out, 3, name.as_bytes());
    proto::put_bytes_field(&mut out, 15, hash.as_bytes());
    out
}

/// Reads the client's first two frames and returns the username of its
/// Authenticate (after checking the Version before it).
async fn read_hello(tls: &mut TlsStream<TcpStream>) -> String {
    let (kind, version) = read_frame(tls, 1 << 20).await.unwrap();
    assert_eq!(kind, message_type::VERSION);
    assert_eq!(
        proto::fields(&version).next().unwrap().unwrap(),
        (1, Value::Varint(0x01_03_04))
    );
    let (kind, authenticate) = read_frame(tls, 1 << 20).await.unwrap();
    assert_eq!(kind, message_type::AUTHENTICATE);
    let (_, username) = proto::fields(&authenticate)
        .map(Result::unwrap)
        .find(|(n, _)| *n == 1)
        .unwrap();
    let Value::Bytes(username) = username else {
        panic!("the username is a string");
    };
    String::from_utf8(username.to_vec()).unwrap()
}

fn fast() -> MumbleOptions {
    MumbleOptions::default().timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn the_client_authenticates_and_gets_server_sync_with_both_certificate_hashes() {
    let (addr, server, seen) = scripted_server(|tls| async move {
        let mut tls = tls.unwrap();
        let client_hash = sha1_hex(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref());
        let username = read_hello(&mut tls).await;
        // What murmur sends before ServerSync, trimmed: its Version, a
        // ChannelState with a fixed32 field no client asked about, another
        // user and then this one.
        let mut channel = Vec::new();
        proto::put_varint_field(&mut channel, 1, 0);
        channel.extend_from_slice(&[0x75, 1, 2, 3, 4]);
        let mut out = frame(message_type::VERSION, &[0x08, 0x84, 0x86, 0x04]);
        out.extend(frame(7, &channel));
        out.extend(frame(
            message_type::USER_STATE,
            &user_state(3, "bob", "b0b"),
        ));
        out.extend(frame(
            message_type::USER_STATE,
            &user_state(7, &username, &client_hash),
        ));
        out.extend(frame(
            message_type::SERVER_SYNC,
            &server_sync(7, "Hi <!--x-->"),
        ));
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
        (username, client_hash)
    })
    .await;
    let identity = Identity::generate("alice").unwrap();
    let sync = mumble_welcome_with("127.0.0.1", addr.port(), &identity, "alice", &fast())
        .await
        .unwrap();
    let (username, client_hash) = seen.await.unwrap();
    // The server got the username and the client's certificate.
    assert_eq!(username, "alice");
    assert_eq!(client_hash, identity.cert_hash());
    // ServerSync's fields come back as sent.
    assert_eq!(sync.session, 7);
    assert_eq!(sync.welcome_text, "Hi <!--x-->");
    assert_eq!(sync.max_bandwidth, Some(72000));
    assert_eq!(sync.permissions, Some(0x0f07_0e0f));
    // The hash is the one in this session's UserState, not another user's.
    assert_eq!(
        sync.client_cert_hash.as_deref(),
        Some(identity.cert_hash().as_str())
    );
    // And the server's certificate hash is reported for pinning.
    assert_eq!(sync.server_cert_hash, server.cert_hash());
}

#[tokio::test]
async fn a_reject_is_a_typed_error_with_the_servers_reason() {
    let (addr, _, _) = scripted_server(|tls| async move {
        let mut tls = tls.unwrap();
        read_hello(&mut tls).await;
        let mut reject = Vec::new();
        proto::put_varint_field(&mut reject, 1, 4);
        proto::put_bytes_field(&mut reject, 2, b"Wrong server password");
        tls.write_all(&frame(message_type::REJECT, &reject))
            .await
            .unwrap();
        tls.shutdown().await.unwrap();
    })
    .await;
    let identity = Identity::generate("alice").unwrap();
    let error = mumble_welcome_with("127.0.0.1", addr.port(), &identity, "alice", &fast())
        .await
        .unwrap_err();
    // The kind and the reason are both there for the caller.
    assert!(
        matches!(
            &error,
            MumbleError::Rejected { kind: RejectKind::WrongServerPassword, reason }
                if reason == "Wrong server password"
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_different_pinned_certificate_stops_the_handshake_before_the_username_is_sent() {
    let (addr, server, got) = scripted_server(|tls| async move {
        match tls {
            // The client aborts the handshake, so nothing can be read.
            Ok(mut tls) => read_frame(&mut tls, 1 << 20).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    let identity = Identity::generate("alice").unwrap();
    let pin = "00".repeat(20);
    let error = mumble_welcome_with(
        "127.0.0.1",
        addr.port(),
        &identity,
        "alice",
        &fast().pin_server_cert(&pin),
    )
    .await
    .unwrap_err();
    // The error names both hashes.
    match error {
        MumbleError::ServerCertificateMismatch { expected, actual } => {
            assert_eq!(expected, pin);
            assert_eq!(actual, server.cert_hash());
        }
        other => panic!("expected a certificate mismatch, got {other:?}"),
    }
    // The server never received a frame.
    assert!(!got.await.unwrap());
}

#[tokio::test]
async fn a_matching_pin_connects_whatever_its_case_and_colons() {
    let (addr, server, _) = scripted_server(|tls| async move {
        let mut tls = tls.unwrap();
        read_hello(&mut tls).await;
        tls.write_all(&frame(message_type::SERVER_SYNC, &server_sync(1, "")))
            .await
            .unwrap();
        tls.flush().await.unwrap();
    })
    .await;
    // The way a certificate viewer shows it: upper case, colon-separated.
    let pin = server
        .cert_hash()
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let identity = Identity::generate("alice").unwrap();
    let sync = mumble_welcome_with(
        "127.0.0.1",
        addr.port(),
        &identity,
        "alice",
        &fast().pin_server_cert(pin),
    )
    .await
    .unwrap();
    // It connected, and a server without a welcome text gives an empty one.
    assert_eq!(sync.session, 1);
    assert_eq!(sync.welcome_text, "");
    // No UserState came, so no client hash is claimed.
    assert_eq!(sync.client_cert_hash, None);
}

#[tokio::test]
async fn a_malformed_pin_is_refused_before_connecting() {
    let identity = Identity::generate("alice").unwrap();
    for pin in ["abc", &"g".repeat(40), &"0".repeat(41)] {
        // Port 9 (discard) is never reached: the pin is checked first.
        let error =
            mumble_welcome_with("127.0.0.1", 9, &identity, "a", &fast().pin_server_cert(pin))
                .await
                .unwrap_err();
        assert!(
            matches!(&error, MumbleError::InvalidPin(p) if p == pin),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn a_server_that_never_sends_server_sync_times_out() {
    let (addr, _, _) = scripted_server(|tls| async move {
        let mut tls = tls.unwrap();
        read_hello(&mut tls).await;
        // Holds the connection open well past the client's limit.
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(tls);
    })
    .await;
    let identity = Identity::generate("alice").unwrap();
    let options = MumbleOptions::default().timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let error = mumble_welcome_with("127.0.0.1", addr.port(), &identity, "alice", &options)
        .await
        .unwrap_err();
    // The limit is the one given, and it is kept.
    assert!(
        matches!(error, MumbleError::Timeout(d) if d == Duration::from_millis(500)),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_without_being_read() {
    let (addr, _, _) = scripted_server(|tls| async move {
        let mut tls = tls.unwrap();
        read_hello(&mut tls).await;
        // A header announcing 1 GiB, and no body.
        let mut header = message_type::SERVER_SYNC.to_be_bytes().to_vec();
        header.extend_from_slice(&(1u32 << 30).to_be_bytes());
        tls.write_all(&header).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let identity = Identity::generate("alice").unwrap();
    let error = mumble_welcome_with(
        "127.0.0.1",
        addr.port(),
        &identity,
        "alice",
        &fast().max_frame_len(1024),
    )
    .await
    .unwrap_err();
    // The size and the limit are reported, at once rather than at the timeout.
    assert!(
        matches!(error, MumbleError::FrameTooLarge { message_type: 5, len, limit: 1024 } if len == 1 << 30),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_server_that_hangs_up_before_server_sync_is_reported_as_closed() {
    let (addr, _, _) = scripted_server(|tls| async move {
        let mut tls = tls.unwrap();
        read_hello(&mut tls).await;
        // Half a frame, then the end of the stream.
        tls.write_all(&[0, 5, 0]).await.unwrap();
        tls.shutdown().await.unwrap();
    })
    .await;
    let identity = Identity::generate("alice").unwrap();
    let error = mumble_welcome_with("127.0.0.1", addr.port(), &identity, "alice", &fast())
        .await
        .unwrap_err();
    assert!(matches!(error, MumbleError::Closed), "{error:?}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_naming_the_address() {
    // A port just freed: nothing listens on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let identity = Identity::generate("alice").unwrap();
    let error = mumble_welcome_with("127.0.0.1", port, &identity, "alice", &fast())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, MumbleError::Connect { addr, .. } if *addr == format!("127.0.0.1:{port}")),
        "{error:?}"
    );
}

#[test]
fn authenticate_carries_the_username_and_opus() {
    // Field 1 (username) length-delimited, field 5 (opus) true: the bytes
    // protoc writes for `Authenticate { username: "alice", opus: true }`.
    assert_eq!(encode_authenticate("alice"), b"\x0a\x05alice\x28\x01");
}

#[test]
fn server_sync_decodes_around_unknown_and_fixed_fields() {
    let mut payload = Vec::new();
    // An unknown fixed64 and fixed32 first, as a newer server might send.
    payload.push((9 << 3) | 1);
    payload.extend_from_slice(&[0; 8]);
    payload.push((10 << 3) | 5);
    payload.extend_from_slice(&[0; 4]);
    payload.extend(server_sync(42, "<b>Hello</b>"));
    let sync = decode_server_sync(&payload).unwrap();
    // The known fields are all read.
    assert_eq!(sync.session, 42);
    assert_eq!(sync.welcome_text, "<b>Hello</b>");
    assert_eq!(sync.max_bandwidth, Some(72000));
    // A payload cut short is malformed, not a panic.
    let error = decode_server_sync(&payload[..payload.len() - 3]).unwrap_err();
    assert!(
        matches!(
            error,
            MumbleError::Malformed {
                message: "ServerSync",
                ..
            }
        ),
        "{error:?}"
    );
    // A welcome text that is not UTF-8 is malformed too.
    let mut bad = Vec::new();
    proto::put_bytes_field(&mut bad, 3, &[0xc3, 0x28]);
    assert!(decode_server_sync(&bad).is_err());
}

#[test]
fn every_reject_kind_of_mumble_proto_is_named() {
    let expected = [
        RejectKind::None,
        RejectKind::WrongVersion,
        RejectKind::InvalidUsername,
        RejectKind::WrongUserPassword,
        RejectKind::WrongServerPassword,
        RejectKind::UsernameInUse,
        RejectKind::ServerFull,
        RejectKind::NoCertificate,
        RejectKind::AuthenticatorFail,
        RejectKind::Other(9),
    ];
    for (wire, kind) in expected.into_iter().enumerate() {
        let mut payload = Vec::new();
        proto::put_varint_field(&mut payload, 1, wire as u64);
        // The number on the wire maps to its kind, with an empty reason
        // when the server gave none.
        assert!(
            matches!(decode_reject(&payload).unwrap(), MumbleError::Rejected { kind: k, reason } if k == kind && reason.is_empty()),
            "{wire}"
        );
    }
}

#[test]
fn user_state_without_a_hash_gives_none() {
    let mut payload = Vec::new();
    proto::put_varint_field(&mut payload, 1, 5);
    proto::put_bytes_field(&mut payload, 3, b"guest");
    // A user without a certificate has no hash.
    assert_eq!(decode_user_state_hash(&payload).unwrap(), (Some(5), None));
    // An empty hash is no hash either.
    proto::put_bytes_field(&mut payload, 15, b"");
    assert_eq!(decode_user_state_hash(&payload).unwrap(), (Some(5), None));
}

#[tokio::test]
async fn frames_are_read_as_type_length_and_payload() {
    let mut stream = frame(5, b"abc");
    stream.extend(frame(1, b""));
    let mut input = stream.as_slice();
    // Two frames back to back, the second empty.
    assert_eq!(
        read_frame(&mut input, 16).await.unwrap(),
        (5, b"abc".to_vec())
    );
    assert_eq!(read_frame(&mut input, 16).await.unwrap(), (1, Vec::new()));
    // Then the end of the stream.
    assert!(matches!(
        read_frame(&mut input, 16).await,
        Err(MumbleError::Closed)
    ));
}
