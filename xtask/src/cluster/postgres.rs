//! A throwaway PostgreSQL server for `cargo xtask cluster --backend postgres`,
//! run from the machine's own binaries (`initdb`, `pg_ctl`) with its data in
//! `DIR/pg`, listening on a free loopback port with trust authentication.
//!
//! PostgreSQL refuses to run as root, so when xtask runs as root the server
//! runs as the `postgres` user through `runuser`, and `DIR/pg` is handed to
//! that user. It is for development only: no password, loopback only.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gater_testkit::pg_harness::{self, SYSTEM_USER};

use super::state::PostgresRecord;

/// The database superuser `initdb` creates.
const SUPERUSER: &str = "gater";
/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "60";

/// Initialises (first time) and starts PostgreSQL under `dir`; returns how to reach it.
pub(crate) fn start(dir: &Path) -> Result<PostgresRecord> {
    let bin_dir = find_bin_dir()?;
    let data_dir = dir.join("data");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let as_root = rustix::process::geteuid().is_root();
    if as_root {
        hand_over(dir)?;
    }
    if !data_dir.join("PG_VERSION").exists() {
        let data = path_arg(&data_dir)?;
        run(
            &bin_dir,
            as_root,
            dir,
            "initdb",
            &["-D", &data, "-U", SUPERUSER, "--auth=trust", "--no-sync"],
        )?;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free TCP port")?
        .port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1",
        path_arg(dir)?
    );
    let log = path_arg(&dir.join("postgres.log"))?;
    let data = path_arg(&data_dir)?;
    run(
        &bin_dir,
        as_root,
        dir,
        "pg_ctl",
        &[
            "-D",
            &data,
            "-l",
            &log,
            "-o",
            &options,
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
            "start",
        ],
    )?;
    Ok(PostgresRecord {
        url: format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres"),
        pid: postmaster_pid(&data_dir),
        data_dir,
        bin_dir,
    })
}

/// Stops the server (fast shutdown: clients are disconnected).
pub(crate) fn stop(record: &PostgresRecord) -> Result<()> {
    let as_root = rustix::process::geteuid().is_root();
    let dir = record.data_dir.parent().unwrap_or(Path::new("/"));
    let data = path_arg(&record.data_dir)?;
    run(
        &record.bin_dir,
        as_root,
        dir,
        "pg_ctl",
        &[
            "-D",
            &data,
            "-m",
            "fast",
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
            "stop",
        ],
    )
}

/// The postmaster's pid, from the first line of `postmaster.pid`.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The directory holding `initdb` and `pg_ctl` (found as the test harness finds it).
fn find_bin_dir() -> Result<PathBuf> {
    pg_harness::bin_dir().context(
        "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or under /usr/lib/postgresql; \
         install PostgreSQL (e.g. apt-get install postgresql) or use --backend embedded",
    )
}

/// Gives `dir` to the `postgres` user, after checking that user can reach it.
fn hand_over(dir: &Path) -> Result<()> {
    let (uid, gid) = system_user_ids(SYSTEM_USER)?;
    let absolute = fs::canonicalize(dir)?;
    for ancestor in absolute.ancestors().skip(1) {
        let mode = fs::metadata(ancestor)?.permissions().mode();
        if mode & 0o001 == 0 {
            bail!(
                "PostgreSQL runs as user {SYSTEM_USER} and cannot enter {}; \
                 choose a --dir whose parent directories others may enter (e.g. under /tmp)",
                ancestor.display()
            );
        }
    }
    chown_tree(&absolute, uid, gid)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    chown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot give {} to {SYSTEM_USER}", path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The uid and gid of a system user, from `/etc/passwd`.
fn system_user_ids(user: &str) -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&user))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .with_context(|| format!("no system user {user:?} to run PostgreSQL as"))
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root, after
/// showing the command; its output is kept for the error message.
fn run(bin_dir: &Path, as_root: bool, cwd: &Path, tool: &str, args: &[&str]) -> Result<()> {
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    eprintln!("$ {tool} {}", shown.join(" "));
    pg_harness::run_tool(bin_dir, as_root, cwd, tool, args)
        .map(drop)
        .map_err(anyhow::Error::msg)
}

/// A path as one argument for `pg_ctl -o`, which a shell splits on whitespace.
fn path_arg(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path)?;
    let text = absolute
        .to_str()
        .with_context(|| format!("{} is not UTF-8", absolute.display()))?;
    if text.chars().any(char::is_whitespace) {
        bail!("PostgreSQL's directory {text:?} holds whitespace; choose another --dir");
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn the_postgres_user_is_found_in_passwd_and_a_missing_user_is_an_error() {
        if !Path::new("/etc/passwd").exists() {
            return;
        }
        assert_eq!(system_user_ids("root").unwrap(), (0, 0));
        let err = system_user_ids("no-such-user-here").unwrap_err();
        assert!(err.to_string().contains("no-such-user-here"), "{err}");
    }

    #[test]
    fn a_throwaway_server_accepts_connections_at_its_url_and_stops() {
        use std::os::unix::fs::PermissionsExt;
        let has_psql = Path::new("/usr/bin/psql").is_file();
        if std::env::var_os("RUN_SLOW_TESTS").is_none() || find_bin_dir().is_err() || !has_psql {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL runs as its own user when the tests run as root.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let record = start(&dir.path().join("pg")).unwrap();
        let pid = record.pid.expect("the postmaster's pid is recorded");
        let query = Command::new("/usr/bin/psql")
            .args([record.url.as_str(), "-tAc", "select 40 + 2"])
            .output()
            .unwrap();
        stop(&record).unwrap();
        assert!(
            query.status.success(),
            "{}",
            String::from_utf8_lossy(&query.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&query.stdout).trim(), "42");
        assert!(
            !super::super::process::is_alive(pid),
            "the postmaster is gone"
        );
    }

    #[test]
    fn a_directory_with_whitespace_is_refused_for_pg_ctl() {
        assert!(path_arg(Path::new("/tmp/a b")).is_err());
        assert_eq!(path_arg(Path::new("/tmp/ab")).unwrap(), "/tmp/ab");
    }
}
