//! A throwaway PostgreSQL cluster for tests and benches: Debian's server,
//! `initdb` and `pg_ctl` in a temporary directory, on a loopback port, as
//! `nobody` when run as root (the server refuses root). Not a test double:
//! the real server, so the PostgreSQL store is tested against the engine it
//! will meet.

use std::path::PathBuf;
use std::process::Command;

/// A running throwaway cluster; stopped (immediately) and removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The user the server runs as, when the tests run as root.
    user: Option<&'static str>,
    pub port: u16,
}

/// Where Debian's PostgreSQL programs are: `$ITSM_PG_BIN`, else the newest
/// `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ITSM_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL tests need Debian's server: `apt-get install postgresql` \
             (or set ITSM_PG_BIN to a directory holding initdb and pg_ctl)"
        )
    })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

impl Cluster {
    /// `initdb` and start a cluster; its superuser is `itsm`, trusted on
    /// loopback (the cluster lives only as long as the test).
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("itsm-pg-")
            .tempdir()
            .unwrap();
        // PostgreSQL refuses to run as root.
        let user = is_root().then_some("nobody");
        let mut cluster = Self {
            dir,
            bin,
            user,
            port: 0,
        };
        if let Some(user) = user {
            let status = Command::new("chown")
                .args([&format!("{user}:"), cluster.dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory to {user}");
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-U",
                "itsm",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // A free port, then the server on it; another test may take the
        // port between the two, so try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
                cluster.dir.path().display()
            );
            let log = cluster.dir.path().join("server.log");
            if cluster.try_run(
                "pg_ctl",
                &[
                    "-D",
                    cluster.data().to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &options,
                    "-w",
                    "start",
                ],
            ) {
                cluster.port = port;
                return cluster;
            }
        }
        panic!(
            "the PostgreSQL server did not start: {}",
            std::fs::read_to_string(cluster.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The path of one of the server's programs (`psql`, say).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// `postgres://itsm@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://itsm@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        if !out.status.success() {
            eprintln!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }

    fn run(&self, program: &str, args: &[&str]) {
        assert!(self.try_run(program, args), "{program} failed");
    }

    /// Run SQL through `psql`; its output, unaligned, tuples only.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.try_run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}
