//! `gater certs issue`: signs a certificate for one identity with an
//! existing CA (the signing code is gater-transport-quic's `certs`).

use gater_transport_quic::certs::{self, IssueOptions};
use serde_json::json;

use super::args::CertsCommand;

/// Runs a `gater certs` command; prints the files written (or the error).
pub(crate) fn run(command: CertsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        CertsCommand::Issue(args) => {
            let options = IssueOptions {
                worker: args.worker,
                hosts: args.hosts,
                force: args.force,
            };
            let written = certs::issue_identity(&args.ca_dir, &args.name, &args.out, &options)
                .map_err(|e| match e {
                    gater_transport_quic::TlsError::Exists { path } => {
                        anyhow::anyhow!("{path} exists already; pass --force to replace it")
                    }
                    other => anyhow::Error::new(other),
                })?;
            let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
            if json {
                println!("{}", json!({"identity": args.name, "files": files}));
            } else {
                println!("issued {} in {}", args.name, args.out.display());
                for file in files {
                    println!("  {file}");
                }
            }
            Ok(())
        }
    }
}
