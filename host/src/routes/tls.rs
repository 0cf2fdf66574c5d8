//! TLS listeners for plugin routes, with client certificates.
//!
//! A plugin's routes with `[plugin.<id>.routes.tls]` are served only here,
//! so a client cannot go around the certificate check through the plain
//! listener. The host asks every client for a certificate and takes any,
//! self-signed included (Mumble's are): the TLS handshake proves that the
//! client holds the certificate's key, and the plugin gets the
//! certificate's SHA-1 to decide whom it identifies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Extension;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use sha1::{Digest, Sha1};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_runtime::{ClientCertificates, RoutesTls};

/// The SHA-1 of the certificate the client presented on this connection.
#[derive(Debug, Clone)]
pub(super) struct ClientCertificate(pub(super) Option<String>);

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes any client certificate whose key signed the handshake.
#[derive(Debug)]
struct AnyClientCertificate {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // No chain to check: the certificate is an identity, not a claim
        // some authority vouches for. Possession is checked below.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server's TLS configuration for `tls`.
fn server_config(plugin: &str, tls: &RoutesTls) -> Result<rustls::ServerConfig> {
    let setting = format!("[plugin.{plugin}.routes.tls]");
    let certificates = CertificateDer::pem_file_iter(&tls.certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "{setting} certificate: cannot read {}",
                tls.certificate.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("{setting} key: cannot read {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = AnyClientCertificate {
        mandatory: tls.client_certificates == ClientCertificates::Required,
        algorithms: provider.signature_verification_algorithms,
    };
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(certificates, key)
        .with_context(|| format!("{setting}: the certificate and key do not go together"))
}

/// Serves `router` over TLS on `tls.listen`; returns the bound address and
/// the accept loop, which ends on `shutdown`.
pub(super) async fn serve(
    plugin: &str,
    tls: &RoutesTls,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(plugin, tls)?));
    let listener = tokio::net::TcpListener::bind(tls.listen)
        .await
        .with_context(|| format!("failed to listen on {}", tls.listen))?;
    let local = listener.local_addr()?;
    let plugin = plugin.to_owned();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%plugin, %error, "accepting a TLS connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| hex::encode(Sha1::digest(cert.as_ref())));
                let service = router
                    .layer(Extension(ClientCertificate(certificate)))
                    .layer(Extension(ConnectInfo(peer)));
                let connection = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
                if let Err(error) = connection {
                    tracing::debug!(%peer, %error, "TLS connection ended with an error");
                }
            });
        }
    });
    Ok((local, task))
}
