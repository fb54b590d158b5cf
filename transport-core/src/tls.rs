//! TLS trust and identity, the same on every backend: the operator's CA
//! bundle (a company's internal CA, not only the public roots) and a client
//! certificate for mutual TLS, named `tls_ca`, `tls_cert` and `tls_key` in
//! every backend's URL.
//!
//! There is deliberately no option that turns verification off: a server
//! whose certificate cannot be verified is refused with [`crate::ErrorKind::Tls`],
//! a configuration error that is never retried.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

#[cfg(feature = "rustls")]
use crate::ErrorKind;
use crate::{Error, Result};

/// Where PEM text comes from: a file read when the transport connects
/// (PostgreSQL: at each new pooled connection), or the text itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pem {
    /// A PEM file.
    File(PathBuf),
    /// PEM text.
    Text(String),
}

impl Pem {
    fn read(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::File(path) => {
                std::fs::read(path).map_err(|e| Error::invalid(format!("{what}: cannot read {}: {e}", path.display())))
            }
            Pem::Text(text) => Ok(text.as_bytes().to_vec()),
        }
    }

    /// Where it comes from, for error messages: the path, never the text.
    fn origin(&self) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Text(_) => "the PEM text given".into(),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            // A key's text is a secret; a certificate's is noise in a log.
            Pem::Text(text) => write!(f, "Text(<{} bytes>)", text.len()),
        }
    }
}

/// Trust and identity for TLS connections. Empty (the default) means the
/// client's default roots and no client certificate.
///
/// In URLs: `tls_ca=<file>` (CA certificates to trust, instead of the system
/// roots), `tls_cert=<file>` and `tls_key=<file>` (a client certificate
/// chain and its private key, for servers that demand one; both or neither).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsOptions {
    /// CA certificates to trust instead of the client's default roots
    /// (added to them on RabbitMQ and PostgreSQL, as those clients do it).
    pub ca: Option<Pem>,
    /// The client certificate chain, leaf first (mutual TLS).
    pub cert: Option<Pem>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<Pem>,
}

impl TlsOptions {
    /// Whether anything differs from the client's default roots without a
    /// client certificate.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Refuse the options on a connection that would not use TLS: they
    /// would be left unused and the connection made in plain text.
    /// `scheme` is the URL scheme that turns TLS on (`rediss://`, ...).
    pub fn require_tls(&self, tls: bool, scheme: &str) -> Result<()> {
        if self.is_set() && !tls {
            return Err(Error::invalid(format!(
                "tls_ca, tls_cert and tls_key need TLS: a {scheme} URL, or `tls: true` in code"
            )));
        }
        Ok(())
    }

    /// Take a URL option if it is one of TLS's (`tls_ca`, `tls_cert`,
    /// `tls_key`, each a file path): `Ok(true)` when taken, `Ok(false)` when
    /// the option is another one.
    pub fn url_option(&mut self, key: &str, value: &str) -> Result<bool> {
        let slot = match key {
            "tls_ca" => &mut self.ca,
            "tls_cert" => &mut self.cert,
            "tls_key" => &mut self.key,
            _ => return Ok(false),
        };
        if value.is_empty() {
            return Err(Error::invalid(format!("URL option {key} needs a file path")));
        }
        *slot = Some(Pem::File(value.into()));
        Ok(true)
    }

    /// Read and check everything now, so a missing file, a key without its
    /// certificate or text that is not PEM fails as `InvalidArgument`
    /// before any connection is tried.
    pub fn load(&self) -> Result<TlsMaterial> {
        let ca = match &self.ca {
            Some(pem) => {
                let text = pem.read("tls_ca")?;
                let certs = certificates(&text, "tls_ca", pem)?;
                Some((text, certs))
            }
            None => None,
        };
        let identity = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::invalid(
                    "tls_cert and tls_key go together: a client certificate needs its private key",
                ))
            }
            (Some(cert), Some(key)) => {
                let cert_text = cert.read("tls_cert")?;
                let chain = certificates(&cert_text, "tls_cert", cert)?;
                let key_text = key.read("tls_key")?;
                // The parser's error names the PEM section it expected; it
                // never quotes the key.
                let private = PrivateKeyDer::from_pem_slice(&key_text)
                    .map_err(|_| Error::invalid(format!("tls_key: no private key in {}", key.origin())))?;
                Some(Identity {
                    cert_pem: cert_text,
                    chain,
                    key_pem: KeyPem(key_text),
                    key: Arc::new(private),
                })
            }
        };
        Ok(TlsMaterial { ca, identity })
    }
}

fn certificates(text: &[u8], what: &str, origin: &Pem) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("{what}: {} is not PEM: {e}", origin.origin())))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!("{what}: no certificate in {}", origin.origin())));
    }
    Ok(certs)
}

/// [`TlsOptions`] read and checked: PEM text for clients that take text
/// (Redis, PostgreSQL, librdkafka), parsed certificates for rustls.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    ca: Option<(Vec<u8>, Vec<CertificateDer<'static>>)>,
    identity: Option<Identity>,
}

#[derive(Clone)]
struct Identity {
    cert_pem: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key_pem: KeyPem,
    // Parsed in any case: a key that is not PEM fails at load.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .field("key", &"***")
            .finish()
    }
}

/// A private key's PEM text: never printed.
#[derive(Clone)]
struct KeyPem(Vec<u8>);

impl TlsMaterial {
    /// The CA bundle's PEM text, when one was given.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca.as_ref().map(|(text, _)| text.as_slice())
    }

    /// The CA certificates, when a bundle was given.
    pub fn ca_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.ca.as_ref().map(|(_, certs)| certs.as_slice())
    }

    /// The client certificate chain's and private key's PEM text, for
    /// mutual TLS. Hand the key to the client library only.
    pub fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity
            .as_ref()
            .map(|i| (i.cert_pem.as_slice(), i.key_pem.0.as_slice()))
    }

    /// A rustls client configuration: the CA bundle (or the system's roots)
    /// and the client certificate, if any.
    #[cfg(feature = "rustls")]
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        match self.ca_certificates() {
            Some(certs) => {
                for cert in certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| Error::invalid(format!("tls_ca: not a usable CA certificate: {e}")))?;
                }
            }
            None => {
                // The system's store, as the broker clients do without tls_ca.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        // The application's provider if it installed one; else ring (with
        // several providers linked in, rustls cannot pick one by itself).
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some(i) => builder
                .with_client_auth_cert(i.chain.clone(), i.key.clone_key())
                .map_err(|e| Error::invalid(format!("tls_cert/tls_key: {e}"))),
        }
    }
}

/// Make ring rustls's process-wide provider unless the application chose
/// one. With several providers linked in (the AWS SDK brings aws-lc-rs),
/// rustls cannot pick one by itself and a client library that builds its
/// own TLS configuration would panic at connect.
#[cfg(feature = "rustls")]
pub fn install_default_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when the application installed one already: keep theirs.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A TLS handshake failure found anywhere in `error`'s chain, as an
/// [`ErrorKind::Tls`] error that says what to fix; `None` when the failure
/// is not TLS's. Backends call it on connect errors, whose client libraries
/// wrap rustls's error in I/O errors of their own.
#[cfg(feature = "rustls")]
pub fn handshake_error(error: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(Error::new(ErrorKind::Tls, explain(tls)));
        }
        // io::Error's `source` skips the error it wraps: look inside.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(found) = handshake_error(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    // Some clients keep only the text of rustls's error.
    explain_text(&error.to_string()).map(|what| Error::new(ErrorKind::Tls, format!("{what}: {error}")))
}

/// What rustls's error text means, for clients that keep only the text
/// (the words are rustls's `Display` of its error kinds).
#[cfg(feature = "rustls")]
fn explain_text(text: &str) -> Option<&'static str> {
    let has = |s: &str| text.contains(s);
    Some(if has("invalid peer certificate") {
        if has("UnknownIssuer") {
            says::UNKNOWN_ISSUER
        } else if has("expired") || has("Expired") {
            says::EXPIRED
        } else if has("not valid for name") || has("NotValidForName") {
            says::WRONG_NAME
        } else if has("not valid yet") || has("NotValidYet") {
            says::NOT_YET
        } else {
            says::REFUSED
        }
    } else if has("received fatal alert") {
        if has("CertificateRequired") {
            says::DEMANDS_CLIENT_CERT
        } else if has("HandshakeFailure") {
            says::HANDSHAKE_FAILURE
        } else if has("CertificateExpired") {
            says::CLIENT_CERT_EXPIRED
        } else if has("UnknownCA") || has("BadCertificate") || has("CertificateUnknown") || has("AccessDenied") {
            says::CLIENT_CERT_REFUSED
        } else {
            says::FAILED
        }
    } else if has("received corrupt message") || has("InvalidContentType") {
        says::NOT_TLS
    } else {
        return None;
    })
}

/// What a refused handshake means, in the words every message uses.
#[cfg(feature = "rustls")]
mod says {
    pub(super) const UNKNOWN_ISSUER: &str =
        "the server's certificate is not signed by a trusted CA (set tls_ca to the CA that signed it)";
    pub(super) const EXPIRED: &str = "the server's certificate has expired";
    pub(super) const NOT_YET: &str = "the server's certificate is not valid yet (check the clocks)";
    pub(super) const WRONG_NAME: &str = "the server's certificate is not valid for the host name in the URL";
    pub(super) const REFUSED: &str = "the server's certificate was refused";
    pub(super) const DEMANDS_CLIENT_CERT: &str = "the server demands a client certificate (set tls_cert and tls_key)";
    pub(super) const HANDSHAKE_FAILURE: &str =
        "the server ended the handshake: it may demand a client certificate (tls_cert, \
         tls_key) or share no protocol version or cipher with this client";
    pub(super) const CLIENT_CERT_REFUSED: &str =
        "the server refused the client certificate (not signed by a CA it trusts)";
    pub(super) const CLIENT_CERT_EXPIRED: &str = "the server refused the client certificate: it has expired";
    pub(super) const NOT_TLS: &str = "the server did not answer with TLS (is this port plain text?)";
    pub(super) const FAILED: &str = "the TLS handshake failed";
}

#[cfg(feature = "rustls")]
fn explain(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let what = match e {
        E::InvalidCertificate(C::UnknownIssuer) => says::UNKNOWN_ISSUER,
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => says::EXPIRED,
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => says::NOT_YET,
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => says::WRONG_NAME,
        E::InvalidCertificate(_) => says::REFUSED,
        E::AlertReceived(A::CertificateRequired) => says::DEMANDS_CLIENT_CERT,
        E::AlertReceived(A::HandshakeFailure) => says::HANDSHAKE_FAILURE,
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::AccessDenied) => {
            says::CLIENT_CERT_REFUSED
        }
        E::AlertReceived(A::CertificateExpired) => says::CLIENT_CERT_EXPIRED,
        E::InvalidMessage(_) => says::NOT_TLS,
        _ => says::FAILED,
    };
    format!("{what}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn url_options_are_taken_and_others_left() {
        let mut t = TlsOptions::default();
        assert!(t.url_option("tls_ca", "/etc/ca.pem").unwrap());
        assert!(!t.url_option("stream_prefix", "X").unwrap());
        assert_eq!(t.ca, Some(Pem::File("/etc/ca.pem".into())));
        assert_eq!(
            t.url_option("tls_key", "").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn key_without_certificate_is_a_configuration_error() {
        let t = TlsOptions {
            key: Some(Pem::Text("x".into())),
            ..TlsOptions::default()
        };
        let e = t.load().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(!e.is_retryable());
    }

    #[test]
    fn missing_file_and_non_pem_name_the_option_never_the_text() {
        let t = TlsOptions {
            ca: Some(Pem::File("/nonexistent/ca.pem".into())),
            ..TlsOptions::default()
        };
        let e = t.load().unwrap_err().to_string();
        assert!(e.contains("tls_ca") && e.contains("/nonexistent/ca.pem"), "{e}");
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n";
        let t = TlsOptions {
            ca: Some(Pem::Text("not pem at all".into())),
            key: Some(Pem::Text(secret.into())),
            ..TlsOptions::default()
        };
        let e = t.load().unwrap_err().to_string();
        assert!(e.contains("no certificate in the PEM text given"), "{e}");
        assert!(!format!("{t:?}").contains("c2VjcmV0"), "{t:?}");
    }
}
