//! The client certificate a user is known by. Mumble identifies users by
//! the SHA-1 of their certificate, and Brmble reuses that hash as the key
//! of the user's Matrix account, so losing the key loses the account: it is
//! kept in owner-only files and never regenerated behind the user's back.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha1::{Digest as _, Sha1};

/// The file of the certificate in an identity directory.
pub const CERT_FILE: &str = "cert.pem";
/// The file of the private key in an identity directory.
pub const KEY_FILE: &str = "key.pem";
/// The common name of identities [`Identity::load_or_create`] creates.
/// Mumble shows it nowhere that matters; the hash is what identifies.
pub const DEFAULT_COMMON_NAME: &str = "Brmble client";

/// Why an identity could not be made, read or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a file of the identity failed.
    #[error("failed to access {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Only one of the two files exists: creating a fresh pair would
    /// silently replace the user's identity, so that is left to them.
    #[error(
        "the identity in {} is incomplete: {} is missing (restore it, or remove the directory to start a new identity)",
        dir.display(),
        missing
    )]
    Incomplete {
        /// The identity directory.
        dir: PathBuf,
        /// The missing file's name.
        missing: &'static str,
    },
    /// A file holds no usable PEM certificate or key, or the key does not
    /// belong to the certificate.
    #[error("invalid identity: {0}")]
    Invalid(String),
    /// Generating the key or the certificate failed.
    #[error("failed to generate a certificate")]
    Generate(#[from] rcgen::Error),
}

/// A self-signed client certificate and its private key.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// A new identity: a fresh P-256 key and a self-signed certificate
    /// with `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    /// An identity from a PEM certificate (the first one in `cert_pem`)
    /// and a PEM private key (PKCS#8, PKCS#1 or SEC1), checked to belong
    /// together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| IdentityError::Invalid(format!("no PEM certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| IdentityError::Invalid(format!("no PEM private key: {e}")))?;
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), &provider)
            .map_err(|e| {
                IdentityError::Invalid(format!("the key does not fit the certificate: {e}"))
            })?;
        Ok(Self { cert, key })
    }

    /// The identity kept in `dir` ([`CERT_FILE`] and [`KEY_FILE`]), or a
    /// new one saved there if the directory has neither: the directory is
    /// created owner-only (0700) and the files 0600.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let read = |path: &Path| {
                    fs::read_to_string(path).map_err(|source| IdentityError::Io {
                        path: path.to_owned(),
                        source,
                    })
                };
                Self::from_pem(&read(&cert_path)?, &read(&key_path)?)
            }
            (false, false) => {
                let identity = Self::generate(DEFAULT_COMMON_NAME)?;
                identity.save(dir)?;
                Ok(identity)
            }
            (true, false) => Err(IdentityError::Incomplete {
                dir: dir.to_owned(),
                missing: KEY_FILE,
            }),
            (false, true) => Err(IdentityError::Incomplete {
                dir: dir.to_owned(),
                missing: CERT_FILE,
            }),
        }
    }

    /// Writes the identity into `dir`, creating it owner-only. Each file is
    /// written under a temporary name and renamed, the certificate last, so
    /// an interrupted save never leaves a certificate without its key.
    fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| IdentityError::Io { path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        for (name, contents) in [(KEY_FILE, self.key_pem()), (CERT_FILE, self.cert_pem())] {
            let path = dir.join(name);
            let partial = dir.join(format!("{name}.partial"));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)
                .map_err(io(&partial))?;
            // `mode` applies only to a file it creates; a leftover partial
            // file may have had other permissions.
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io(&partial))?;
            file.write_all(contents.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io(&partial))?;
            fs::rename(&partial, &path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The SHA-1 of the certificate's DER encoding, as 40 lowercase hex
    /// digits: Mumble's certificate hash, and Brmble's `certHash`.
    pub fn cert_hash(&self) -> String {
        sha1_hex(&self.cert)
    }

    /// The certificate's DER encoding.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert)
    }

    fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem(label, self.key.secret_der())
    }

    /// The certificate and key for a rustls client configuration.
    pub(crate) fn rustls_parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![self.cert.clone()], self.key.clone_key())
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    // The key stays out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_hash", &self.cert_hash())
            .finish_non_exhaustive()
    }
}

/// SHA-1 of `bytes` as lowercase hex.
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    // PEM wraps its base64 at 64 characters.
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use sha1::{Digest as _, Sha1};

    use super::{CERT_FILE, Identity, IdentityError, KEY_FILE};

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_cert_hash_is_the_lowercase_hex_sha1_of_the_certificate_der() {
        let identity = Identity::generate("alice").unwrap();
        let hash = identity.cert_hash();
        // 40 lowercase hex digits.
        assert_eq!(hash.len(), 40);
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{hash}"
        );
        // Of the DER, not of the PEM text.
        assert_eq!(hash, hex::encode(Sha1::digest(identity.cert_der())));
        // Two identities differ.
        assert_ne!(hash, Identity::generate("alice").unwrap().cert_hash());
    }

    #[test]
    fn a_new_identity_is_saved_owner_only_and_loads_back_the_same() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nested/identity");
        let created = Identity::load_or_create(&dir).unwrap();
        // The directory and both files are the owner's alone.
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CERT_FILE)), 0o600);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        // Nothing temporary is left behind.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [CERT_FILE, KEY_FILE]);
        // Loading again gives the same certificate: the same Brmble user.
        let loaded = Identity::load_or_create(&dir).unwrap();
        assert_eq!(loaded.cert_hash(), created.cert_hash());
        // The files are ordinary PEM.
        let pem = std::fs::read_to_string(dir.join(CERT_FILE)).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert!(pem.lines().all(|l| l.len() <= 64));
        let key = std::fs::read_to_string(dir.join(KEY_FILE)).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn a_half_identity_is_an_error_and_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let key = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let error = Identity::load_or_create(dir.path()).unwrap_err();
        // It names the missing file.
        assert!(
            matches!(
                error,
                IdentityError::Incomplete {
                    missing: CERT_FILE,
                    ..
                }
            ),
            "{error:?}"
        );
        // And the remaining key is untouched.
        assert_eq!(std::fs::read(dir.path().join(KEY_FILE)).unwrap(), key);
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let alice = Identity::generate("alice").unwrap();
        let bob = Identity::generate("bob").unwrap();
        let bob_key = {
            let dir = tempfile::tempdir().unwrap();
            bob.save(dir.path()).unwrap();
            std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap()
        };
        // Alice's certificate with Bob's key cannot sign as Alice.
        let error = Identity::from_pem(&alice.cert_pem(), &bob_key).unwrap_err();
        assert!(matches!(error, IdentityError::Invalid(_)), "{error:?}");
        // Garbage is refused too.
        assert!(Identity::from_pem("not pem", &bob_key).is_err());
        assert!(Identity::from_pem(&alice.cert_pem(), "not pem").is_err());
    }

    #[test]
    fn debug_output_shows_the_hash_and_not_the_key() {
        let identity = Identity::generate("alice").unwrap();
        let debug = format!("{identity:?}");
        // The hash identifies it.
        assert!(debug.contains(&identity.cert_hash()), "{debug}");
        // The key's PEM body is not there.
        let key = identity.key_pem();
        let body = key.lines().nth(1).unwrap();
        assert!(!debug.contains(body));
    }
}
