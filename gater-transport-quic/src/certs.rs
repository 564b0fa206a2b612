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
//! [`write_dev_certs`] makes a development set; [`issue_identity`] signs a
//! certificate for one identity (its common name) with an existing CA, so
//! each client, worker and proxy has its own key and name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Common name of the development client certificate: the identity
/// `gater --certs` acts as with a development set.
pub const DEV_CLIENT_NAME: &str = "gater client";

/// What [`issue_identity`] writes besides the client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssueOptions {
    /// Also write a server certificate (`server.crt`, `server.key`) with the
    /// same name, valid for [`DEFAULT_SERVER_NAMES`] and `hosts`: one
    /// directory for a worker that serves and heartbeats.
    pub worker: bool,
    /// Extra names of the server certificate.
    pub hosts: Vec<String>,
    /// Replace keys that exist already.
    pub force: bool,
}

/// Signs certificates for the identity `name` with the CA in `ca_dir`
/// (`ca.crt`, `ca.key`) and writes `out/ca.crt`, `out/client.crt` and
/// `out/client.key` (and with [`IssueOptions::worker`] `out/server.crt` and
/// `out/server.key`), so that a client using `out` acts as `name`.
///
/// An existing key is never replaced unless [`IssueOptions::force`]; nothing
/// is written then. Returns the files written.
pub fn issue_identity(
    ca_dir: &Path,
    name: &str,
    out: &Path,
    options: &IssueOptions,
) -> Result<Vec<PathBuf>, TlsError> {
    if name.trim().is_empty() {
        return Err(TlsError::Name("the identity name must not be empty".into()));
    }
    let mut keys = vec![CLIENT_KEY];
    if options.worker {
        keys.push(SERVER_KEY);
    }
    if !options.force {
        if let Some(existing) = keys.iter().map(|k| out.join(k)).find(|p| p.exists()) {
            return Err(TlsError::Exists {
                path: existing.display().to_string(),
            });
        }
    }
    let read = |file: &str| {
        let path = ca_dir.join(file);
        fs::read_to_string(&path).map_err(|e| TlsError::io(&path, e))
    };
    let ca_cert = read(CA_CERT)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, KeyPair::from_pem(&read(CA_KEY)?)?)?;
    fs::create_dir_all(out).map_err(|e| TlsError::io(out, e))?;
    let mut written = Vec::new();
    let same_ca = fs::read_to_string(out.join(CA_CERT)).is_ok_and(|pem| pem == ca_cert);
    if !same_ca {
        write_pem(out, CA_CERT, &ca_cert, false)?;
        written.push(out.join(CA_CERT));
    }
    write_pair(out, (CLIENT_CERT, CLIENT_KEY), issue_client(&issuer, name)?)?;
    written.extend([out.join(CLIENT_CERT), out.join(CLIENT_KEY)]);
    if options.worker {
        let pair = issue_server(&issuer, name, &options.hosts)?;
        write_pair(out, (SERVER_CERT, SERVER_KEY), pair)?;
        written.extend([out.join(SERVER_CERT), out.join(SERVER_KEY)]);
    }
    Ok(written)
}

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
    let (server_cert, server_key) = issue_server(&issuer, DEV_SERVER_NAME, hosts)?;
    let (client_cert, client_key) = issue_client(&issuer, DEV_CLIENT_NAME)?;
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
                issue_server(&issuer, DEV_SERVER_NAME, hosts)?,
            )?;
            wrote = true;
        }
        if missing(CLIENT_CERT, CLIENT_KEY) {
            write_pair(
                dir,
                (CLIENT_CERT, CLIENT_KEY),
                issue_client(&issuer, DEV_CLIENT_NAME)?,
            )?;
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

/// Common name of the development server certificate.
const DEV_SERVER_NAME: &str = "gater server";

fn issue_server(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
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
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issue_client(issuer: &Issuer<'_, KeyPair>, name: &str) -> Result<(String, String), TlsError> {
    let mut params = CertificateParams::new(Vec::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
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
    fn an_issued_identity_is_named_by_its_certificate_and_keys_are_kept() {
        let ca = tempfile::tempdir().unwrap();
        write_dev_certs(ca.path(), &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let options = IssueOptions {
            worker: true,
            hosts: vec!["worker-1.example".into()],
            force: false,
        };
        let written = issue_identity(ca.path(), "billing", out.path(), &options).unwrap();
        assert_eq!(written.len(), 5);
        let client = crate::load_certs(&out.path().join(CLIENT_CERT)).unwrap();
        assert_eq!(
            crate::certificate_identity(&client[0]).as_deref(),
            Some("billing")
        );
        crate::ClientTls::from_dir(out.path()).unwrap();
        crate::ServerTls::from_dir(out.path()).unwrap();
        let key = fs::read_to_string(out.path().join(CLIENT_KEY)).unwrap();
        let err = issue_identity(ca.path(), "other", out.path(), &options).unwrap_err();
        assert!(matches!(err, TlsError::Exists { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(out.path().join(CLIENT_KEY)).unwrap(),
            key
        );
        let forced = IssueOptions {
            force: true,
            ..options
        };
        issue_identity(ca.path(), "other", out.path(), &forced).unwrap();
        assert_ne!(
            fs::read_to_string(out.path().join(CLIENT_KEY)).unwrap(),
            key
        );
    }

    #[test]
    fn a_certificate_without_its_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SERVER_CERT), "x").unwrap();
        let err = write_dev_certs(dir.path(), &[]).unwrap_err();
        assert!(matches!(err, TlsError::Incomplete { .. }), "{err}");
    }
}
