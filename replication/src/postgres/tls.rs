//! TLS for both connections, with rustls. `require` encrypts without verifying (libpq's
//! meaning); `verify-full` checks the chain against `sslrootcert` (or the web PKI roots) and the
//! host name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::conninfo::{ConnInfo, SslMode};
use crate::{Error, Result};

/// The rustls configuration for `info`'s sslmode, or `None` for `disable`.
pub fn client_config(info: &ConnInfo) -> Result<Option<Arc<ClientConfig>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            reason: e.to_string(),
        })?;
    let config = match info.ssl_mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        SslMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match &info.ssl_root_cert {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| Error::Tls {
                        reason: format!("cannot read sslrootcert {path}: {e}"),
                    })?;
                    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                        let cert = cert.map_err(|e| Error::Tls {
                            reason: format!("bad certificate in {path}: {e}"),
                        })?;
                        roots.add(cert).map_err(|e| Error::Tls {
                            reason: format!("bad certificate in {path}: {e}"),
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// The server name to present and verify.
pub fn server_name(info: &ConnInfo) -> Result<ServerName<'static>> {
    ServerName::try_from(info.host.clone()).map_err(|e| Error::Tls {
        reason: format!("invalid host name {} for tls: {e}", info.host),
    })
}

/// The tokio-postgres connector for the SQL connection.
pub fn sql_connector(info: &ConnInfo) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let config = match client_config(info)? {
        Some(c) => (*c).clone(),
        None => {
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Tls {
                    reason: e.to_string(),
                })?
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Encrypt without authenticating the server: libpq's `sslmode=require`.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
