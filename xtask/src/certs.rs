//! `cargo xtask certs`: writes a development CA with server and client
//! certificates in the layout `gater --certs DIR` reads
//! (`DIR/{ca,server,client}.{crt,key}`), then loads them back as the servers
//! and clients will, so a broken set is caught here.
//!
//! What it does not do: replace files already there (an existing CA is kept and
//! only missing certificates are issued from it), or make production certificates.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use gater_transport_quic::certs::{
    self, CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY, DEFAULT_SERVER_NAMES, SERVER_CERT, SERVER_KEY,
};
use gater_transport_quic::{ClientTls, ServerTls};

/// Every file of the layout, in the order they are listed.
pub(crate) const FILES: [&str; 6] = [
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
];

/// `cargo xtask certs` arguments.
#[derive(Args, Debug)]
pub(crate) struct CertsArgs {
    /// Directory to write the certificates and keys in (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Extra names or addresses the server certificate is valid for (besides
    /// localhost, 127.0.0.1 and ::1); repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
}

/// Runs `cargo xtask certs`.
pub(crate) fn run(args: CertsArgs) -> Result<()> {
    let dir = std::path::absolute(&args.dir)?;
    let wrote = write(&dir, &args.hosts)?;
    println!("{}", summary(&dir, &args.hosts, wrote));
    Ok(())
}

/// Writes whatever of the layout is missing in `dir` and checks that the set
/// loads as a server and a client identity; returns whether anything was written.
pub(crate) fn write(dir: &Path, hosts: &[String]) -> Result<bool> {
    let wrote = certs::write_dev_certs(dir, hosts)
        .with_context(|| format!("cannot write certificates in {}", dir.display()))?;
    ServerTls::from_dir(dir).context("the server certificate does not load")?;
    ClientTls::from_dir(dir).context("the client certificate does not load")?;
    Ok(wrote)
}

fn summary(dir: &Path, hosts: &[String], wrote: bool) -> String {
    let verb = if wrote {
        "wrote"
    } else {
        "kept (already there)"
    };
    let mut names: Vec<&str> = DEFAULT_SERVER_NAMES.to_vec();
    names.extend(hosts.iter().map(String::as_str));
    let files: Vec<String> = FILES
        .iter()
        .map(|f| format!("  {}", dir.join(f).display()))
        .collect();
    format!(
        "certs: {verb} a development CA, server and client certificates; all load:\n{}\n\
         server names (when newly issued): {}\n\
         use them:  gater --certs {} worker ...   /   gater --certs {} --server HOST:PORT workers",
        files.join("\n"),
        names.join(", "),
        dir.display(),
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_writes_the_six_files_and_they_load_as_server_and_client() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nested").join("certs");
        assert!(write(&target, &["gater.test".into()]).unwrap());
        for file in FILES {
            assert!(target.join(file).is_file(), "{file} written");
        }
        ServerTls::from_dir(&target).unwrap();
        ClientTls::from_dir(&target).unwrap();
    }

    #[test]
    fn certs_keeps_an_existing_ca_and_reissues_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[]).unwrap();
        let ca = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        assert!(!write(dir.path(), &[]).unwrap(), "a complete set is kept");
        std::fs::remove_file(dir.path().join(SERVER_KEY)).unwrap();
        assert!(write(dir.path(), &[]).unwrap());
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca);
    }

    #[test]
    fn the_summary_lists_every_file_and_the_extra_host() {
        let text = summary(Path::new("/c"), &["gater.test".into()], true);
        for file in FILES {
            assert!(text.contains(&format!("/c/{file}")), "{text}");
        }
        assert!(text.contains("gater.test"));
        assert!(text.starts_with("certs: wrote"));
    }
}
