//! A real PostgreSQL server for the tests, started once per test process from the Debian
//! `postgresql` package's binaries: `initdb` into a temporary folder, `postgres` on a free
//! loopback port, a fresh database for each caller. It goes when the test process does (a
//! parent-death signal), and its folder with the next start. As root (CI), the server runs as the
//! `postgres` user, as Postgres insists.
//!
//! Shared by the store's conformance suite, the failover tests and the scale-out benchmark
//! (included by path from each).
#![allow(dead_code)] // each includer uses a different part

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The server of this test process.
pub struct Postgres {
    port: u16,
    dir: PathBuf,
}

static SERVER: OnceLock<Postgres> = OnceLock::new();
static DURABLE_SERVER: OnceLock<Postgres> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The URL of a new, empty database on this process's server (started on first use, with
/// `fsync` off: the tests' commits need not reach the disk).
pub fn database() -> String {
    SERVER.get_or_init(|| Postgres::start(false)).new_database()
}

/// `database`, on a server that flushes its WAL as a production one does (for benchmarks).
pub fn durable_database() -> String {
    DURABLE_SERVER.get_or_init(|| Postgres::start(true)).new_database()
}

/// Runs `sql` on the database at `url`: psql's unaligned output.
pub fn query(url: &str, sql: &str) -> String {
    let out = Command::new(bin_dir().join("psql"))
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The folder with `initdb`, `postgres` and `psql`: `$REAGENT_PG_BIN`, `pg_config --bindir`, or
/// the newest `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("REAGENT_PG_BIN") {
        return PathBuf::from(dir);
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|versions| {
        let mut found: Vec<PathBuf> = versions.filter_map(|v| v.ok().map(|v| v.path().join("bin"))).collect();
        found.sort();
        found.pop()
    });
    let configured = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    [debian, configured]
        .into_iter()
        .flatten()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .expect("PostgreSQL's server binaries (initdb, postgres) are missing: `apt-get install postgresql`, or set REAGENT_PG_BIN")
}

impl Postgres {
    fn start(fsync: bool) -> Postgres {
        remove_stale_folders();
        let kind = if fsync { "-durable" } else { "" };
        let dir = std::env::temp_dir().join(format!("reagent-pg-{}{kind}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = bin_dir();
        let data = dir.join("data");
        let initdb = as_server_user(Command::new(bin.join("initdb")), &dir)
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .env("LC_ALL", "C")
            .output()
            .expect("run initdb");
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        let port = free_port();
        // Spawned from a thread that lives as long as the process: the parent-death signal
        // follows the thread that spawned the server, not the process.
        let (started, server) = std::sync::mpsc::channel();
        let (bin, data_dir, socket_dir) = (bin.clone(), data.clone(), dir.clone());
        std::thread::spawn(move || {
            let child = as_server_user(Command::new(bin.join("postgres")), &socket_dir)
                .args(["-D", data_dir.to_str().unwrap(), "-p", &port.to_string(), "-k", socket_dir.to_str().unwrap()])
                .args(["-c", "listen_addresses=127.0.0.1", "-c", if fsync { "fsync=on" } else { "fsync=off" }])
                .args(["-c", "max_connections=300"])
                .args(["-c", "shared_buffers=64MB"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(socket_dir.join("server.log")).unwrap())
                .spawn();
            let _ = started.send(child.map(|c| c.id()));
            loop {
                std::thread::park();
            }
        });
        server.recv().unwrap().expect("start postgres");
        let server = Postgres { port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.ready() {
            assert!(Instant::now() < deadline, "postgres did not start: {}", server.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn new_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::SeqCst));
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn ready(&self) -> bool {
        Command::new(bin_dir().join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn psql(&self, sql: &str) {
        let out = Command::new(bin_dir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `command` set to run as the `postgres` user when this process is root (giving it `dir`), and
/// to get SIGINT (a fast shutdown) when the thread that spawned it ends.
fn as_server_user(mut command: Command, dir: &Path) -> Command {
    let user = if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) =
            postgres_user().expect("running as root, and there is no `postgres` user to run the server as");
        chown_all(dir, uid, gid);
        Some((uid, gid))
    } else {
        None
    };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = user
                && (libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            // After the user change, which would clear it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            Ok(())
        });
    }
    command
}

fn postgres_user() -> Option<(libc::uid_t, libc::gid_t)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn chown_all(dir: &Path, uid: libc::uid_t, gid: libc::gid_t) {
    let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            chown_all(&entry.path(), uid, gid);
        }
    }
}

/// Folders of servers whose test process has exited.
fn remove_stale_folders() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("reagent-pg-").map(|p| p.trim_end_matches("-durable"));
        let Some(pid) = pid.and_then(|p| p.parse::<i32>().ok()) else { continue };
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
