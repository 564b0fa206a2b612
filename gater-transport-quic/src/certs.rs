//! Development certificates: a CA, a server certificate and a client
//! certificate generated with rcgen, in the directory layout the `gater`
//! binary and [`ServerTls::from_dir`](crate::ServerTls::from_dir) /
//! [`ClientTls::from_dir`](crate::ClientTls::from_dir) use:
//!
//! ```text
//! DIR/ca.crt  DIR/ca.key  DIR/server.crt  DIR/server.key  DIR/client.crt  DIR/client.key
//! ```
//!
//! All files are PEM; keys are written readable by their owner only.
//! These are for development and tests: production deployments bring their
//! own CA.

use std::fs;
use std::io::Write;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::tls::TlsError;

/// The CA certificate file.
pub const CA_CERT: &str = "ca.crt";
/// The CA private key file.
pub const CA_KEY: &str = "ca.key";
/// The server certificate file.
pub const SERVER_CERT: &str = "server.crt";
/// The server private key file.
pub const SERVER_KEY: &str = "server.key";
/// The client certificate file.
pub const CLIENT_CERT: &str = "client.crt";
/// The client private key file.
pub const CLIENT_KEY: &str = "client.key";
/// Names every server certificate carries, besides the extra hosts given.
pub const DEFAULT_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A freshly generated set of development certificates, as PEM text.
#[derive(Clone)]
pub struct DevCerts {
    /// The CA certificate.
    pub ca_cert: String,
    /// The CA private key.
    pub ca_key: String,
    /// The server certificate, signed by the CA.
    pub server_cert: String,
    /// The server private key.
    pub server_key: String,
    /// The client certificate, signed by the CA.
    pub client_cert: String,
    /// The client private key.
    pub client_key: String,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("DevCerts").finish_non_exhaustive()
    }
}

/// Generates a development CA with a server certificate (SANs: localhost,
/// 127.0.0.1, ::1 and `hosts`) and a client certificate.
pub fn generate_dev_certs(hosts: &[String]) -> Result<DevCerts, TlsError> {
    let ca_key = KeyPair::generate()?;
    let ca_params = dev_ca_params()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let (server_cert, server_key) = issue_server(&issuer, hosts)?;
    let (client_cert, client_key) = issue_client(&issuer)?;
    Ok(DevCerts {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key_pem,
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}

/// Makes sure `dir` holds a complete development certificate set.
///
/// Creates the directory and every file when there is no CA yet; issues a
/// missing server or client certificate from the CA already there; leaves
/// existing files alone. Returns whether anything was written. A certificate
/// without a CA to have signed it is refused.
pub fn write_dev_certs(dir: &Path, hosts: &[String]) -> Result<bool, TlsError> {
    fs::create_dir_all(dir).map_err(|e| TlsError::io(dir, e))?;
    let has = |name: &str| dir.join(name).exists();
    if !has(CA_CERT) || !has(CA_KEY) {
        if let Some(stray) = [
            CA_CERT,
            CA_KEY,
            SERVER_CERT,
            SERVER_KEY,
            CLIENT_CERT,
            CLIENT_KEY,
        ]
        .into_iter()
        .find(|name| has(name))
        {
            return Err(TlsError::Incomplete {
                dir: dir.display().to_string(),
                detail: format!("{stray} exists but the CA certificate or key does not"),
            });
        }
        let certs = generate_dev_certs(hosts)?;
        write_pem(dir, CA_CERT, &certs.ca_cert, false)?;
        write_pem(dir, CA_KEY, &certs.ca_key, true)?;
        write_pair(
            dir,
            (SERVER_CERT, SERVER_KEY),
            (certs.server_cert, certs.server_key),
        )?;
        write_pair(
            dir,
            (CLIENT_CERT, CLIENT_KEY),
            (certs.client_cert, certs.client_key),
        )?;
        return Ok(true);
    }
    let mut wrote = false;
    let missing = |cert: &str, key: &str| !has(cert) || !has(key);
    if missing(SERVER_CERT, SERVER_KEY) || missing(CLIENT_CERT, CLIENT_KEY) {
        let issuer = load_dev_issuer(dir)?;
        if missing(SERVER_CERT, SERVER_KEY) {
            write_pair(
                dir,
                (SERVER_CERT, SERVER_KEY),
                issue_server(&issuer, hosts)?,
            )?;
            wrote = true;
        }
        if missing(CLIENT_CERT, CLIENT_KEY) {
            write_pair(dir, (CLIENT_CERT, CLIENT_KEY), issue_client(&issuer)?)?;
            wrote = true;
        }
    }
    Ok(wrote)
}

fn dev_ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Gater development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// The issuer of an existing development CA: its parameters are fixed, so
/// the key alone rebuilds it.
fn load_dev_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let path = dir.join(CA_KEY);
    let pem = fs::read_to_string(&path).map_err(|e| TlsError::io(&path, e))?;
    let key = KeyPair::from_pem(&pem)?;
    Ok(Issuer::new(dev_ca_params()?, key))
}

fn issue_server(
    issuer: &Issuer<'_, KeyPair>,
    hosts: &[String],
) -> Result<(String, String), TlsError> {
    let mut names: Vec<String> = DEFAULT_SERVER_NAMES
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    names.extend(
        hosts
            .iter()
            .filter(|h| !names.contains(h))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "gater server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issue_client(issuer: &Issuer<'_, KeyPair>) -> Result<(String, String), TlsError> {
    let mut params = CertificateParams::new(Vec::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "gater client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_pair(
    dir: &Path,
    (cert_name, key_name): (&str, &str),
    (cert, key): (String, String),
) -> Result<(), TlsError> {
    write_pem(dir, cert_name, &cert, false)?;
    write_pem(dir, key_name, &key, true)
}

fn write_pem(dir: &Path, name: &str, pem: &str, secret: bool) -> Result<(), TlsError> {
    let path = dir.join(name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&path).map_err(|e| TlsError::io(&path, e))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| TlsError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_dev_certs_creates_the_layout_once_and_fills_gaps_from_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_dev_certs(dir.path(), &["gater.example".into()]).unwrap());
        let ca = fs::read_to_string(dir.path().join(CA_CERT)).unwrap();
        assert!(!write_dev_certs(dir.path(), &[]).unwrap());
        fs::remove_file(dir.path().join(CLIENT_CERT)).unwrap();
        assert!(write_dev_certs(dir.path(), &[]).unwrap());
        assert_eq!(fs::read_to_string(dir.path().join(CA_CERT)).unwrap(), ca);
        for name in [
            CA_CERT,
            CA_KEY,
            SERVER_CERT,
            SERVER_KEY,
            CLIENT_CERT,
            CLIENT_KEY,
        ] {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        crate::ServerTls::from_dir(dir.path()).unwrap();
        crate::ClientTls::from_dir(dir.path()).unwrap();
    }

    #[test]
    fn a_certificate_without_its_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SERVER_CERT), "x").unwrap();
        let err = write_dev_certs(dir.path(), &[]).unwrap_err();
        assert!(matches!(err, TlsError::Incomplete { .. }), "{err}");
    }
}
