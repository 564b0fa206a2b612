//! A peer's identity from its certificate: the subject's common name, or
//! the first DNS name of its subject alternative names when it has no common
//! name. The TLS handshake has already verified the certificate against the
//! CA; this only reads the name.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The identity a peer's TLS session proves: its leaf certificate's name.
/// `None` when the peer presented no certificate or one without a name.
pub fn peer_identity(connection: &quinn::Connection) -> Option<String> {
    let chain = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    certificate_identity(chain.first()?)
}

/// The name of a DER certificate: the subject's first common name, else its
/// first DNS subject alternative name.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_owned));
    let name = common_name.or_else(|| {
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
    })?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair};

    use super::*;

    fn der(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_common_name_is_the_identity() {
        let mut params = CertificateParams::new(vec!["host.example".into()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "billing");
        assert_eq!(
            certificate_identity(&der(params)).as_deref(),
            Some("billing")
        );
    }

    #[test]
    fn without_a_common_name_the_first_dns_name_is_the_identity() {
        let mut params =
            CertificateParams::new(vec!["first.example".into(), "second.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        assert_eq!(
            certificate_identity(&der(params)).as_deref(),
            Some("first.example")
        );
    }

    #[test]
    fn bytes_that_are_no_certificate_have_no_identity() {
        assert_eq!(certificate_identity(b"not a certificate"), None);
    }
}
