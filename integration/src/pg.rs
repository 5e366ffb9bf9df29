//! A real PostgreSQL for tests: a throwaway cluster, or a fresh database on a given server.
//!
//! Tests of the PostgreSQL metadata backend and multi-node tests need a real server (LISTEN/NOTIFY,
//! row locks and advisory locks cannot be mocked faithfully). [`PgServer::start`] gives each test
//! its own isolated database:
//!
//! - If `XPOD_TEST_PG_URL` is set (e.g. `postgresql://postgres@127.0.0.1:5432/postgres`), it
//!   creates `xpod_test_<random>` on that server and drops it (`WITH (FORCE)`) on drop.
//! - Otherwise it finds `initdb`/`pg_ctl` (the highest version under `/usr/lib/postgresql/*/bin`,
//!   else on `PATH`) and starts a throwaway cluster in a temp dir on a free loopback port
//!   (`fsync=off`, unix socket in the temp dir, trust auth, user `postgres`). As root the
//!   binaries run as the `postgres` user via `runuser`. Drop stops it (`pg_ctl -m immediate`)
//!   and removes the temp dir.
//! - With neither, `start` fails loudly: a test that needs PostgreSQL never skips silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// The message when no PostgreSQL is available.
pub const PG_REQUIRED: &str = "PostgreSQL is required for this test: install it \
     (apt-get install -y postgresql) or set XPOD_TEST_PG_URL";

/// A PostgreSQL database owned by one test. See the module docs.
pub struct PgServer {
    url: String,
    kind: Kind,
}

enum Kind {
    /// A throwaway cluster we started.
    Cluster {
        dir: PathBuf,
        pg_ctl: PathBuf,
        as_postgres: bool,
    },
    /// A database we created on an external server (`admin_url` points at its original database).
    External { admin_url: String, db_name: String },
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("url", &redact(&self.url))
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// A fresh, isolated database. Fails (never skips) if no PostgreSQL is available.
    pub fn start() -> anyhow::Result<PgServer> {
        if let Ok(url) = std::env::var("XPOD_TEST_PG_URL") {
            if !url.trim().is_empty() {
                return Self::external(url.trim());
            }
        }
        Self::start_private()
    }

    /// A throwaway cluster of this test's own, even when `XPOD_TEST_PG_URL` names a shared
    /// server: for tests that stop and start PostgreSQL ([`PgServer::stop`]).
    pub fn start_private() -> anyhow::Result<PgServer> {
        Self::start_private_on(None)
    }

    /// [`PgServer::start_private`] listening on `also` as well as 127.0.0.1 (a test whose
    /// nodes reach it from a network namespace).
    pub fn start_private_on(also: Option<std::net::IpAddr>) -> anyhow::Result<PgServer> {
        let (initdb, pg_ctl) = find_binaries().ok_or_else(|| anyhow!("{PG_REQUIRED}"))?;
        let mut last_err = None;
        // A free port can be taken between our probe and the server's bind: retry a few times.
        for _ in 0..3 {
            match Self::cluster(&initdb, &pg_ctl, also) {
                Ok(s) => return Ok(s),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("starting PostgreSQL failed")))
    }

    /// The connection URL of this test's database (`postgresql://…`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A URL to another fresh database on the same server (created now). Dropped with the
    /// server (cluster mode) or left for the caller to drop (external mode: it is named
    /// `<this database>_<suffix>`).
    pub async fn create_database(&self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("{}_{suffix}", database_of(&self.url)?);
        sql(
            &self.url,
            &format!("CREATE DATABASE {}", quote_ident(&name)),
        )
        .await?;
        with_database(&self.url, &name)
    }

    /// Stops a private cluster (`pg_ctl stop -m fast`: every connection drops, new ones are
    /// refused) until [`PgServer::start_again`]. Fails for a shared server.
    pub fn stop(&self) -> anyhow::Result<()> {
        let Kind::Cluster {
            dir,
            pg_ctl,
            as_postgres,
        } = &self.kind
        else {
            bail!("stop: this PostgreSQL is a shared server (XPOD_TEST_PG_URL); use start_private");
        };
        run(pg_command(*as_postgres, pg_ctl)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "60", "stop"]))
        .context("pg_ctl stop")
    }

    /// Starts a cluster [`PgServer::stop`] stopped, with the options it first started with.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let Kind::Cluster {
            dir,
            pg_ctl,
            as_postgres,
        } = &self.kind
        else {
            bail!("start_again: this PostgreSQL is a shared server");
        };
        let opts = std::fs::read_to_string(dir.join("opts")).context("reading the options")?;
        run(pg_command(*as_postgres, pg_ctl)
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "-t", "60", "-o", opts.trim(), "start"]))
        .context("pg_ctl start")
    }

    /// What a restart of PostgreSQL does to its clients: in cluster mode a real
    /// `pg_ctl restart -m fast` (every connection drops, new ones are refused until it is back);
    /// on an external server (which other tests share) every backend of this test's database is
    /// terminated instead. Returns a line saying which one happened.
    pub fn restart(&self) -> anyhow::Result<String> {
        match &self.kind {
            Kind::Cluster {
                dir,
                pg_ctl,
                as_postgres,
            } => {
                run(pg_command(*as_postgres, pg_ctl)
                    .arg("-D")
                    .arg(dir.join("data"))
                    .arg("-l")
                    .arg(dir.join("log"))
                    .args(["-m", "fast", "-w", "-t", "60", "restart"]))
                .context("pg_ctl restart")?;
                Ok("restarted the throwaway PostgreSQL cluster (pg_ctl restart -m fast)".into())
            }
            Kind::External { .. } => {
                let url = self.url.clone();
                let n = block_on_thread(async move { PgServer::terminate_all_on(&url).await })?;
                Ok(format!(
                    "XPOD_TEST_PG_URL is a shared server: terminated all {n} connections of this test's database instead of restarting it"
                ))
            }
        }
    }

    async fn terminate_all_on(url: &str) -> anyhow::Result<u64> {
        let client = connect(url).await?;
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .context("pg_terminate_backend")?;
        Ok(rows
            .iter()
            .filter(|r| r.try_get::<_, bool>("ok").unwrap_or(false))
            .count() as u64)
    }

    /// How many client connections (other than this call's) this database has now.
    pub fn backends(&self) -> anyhow::Result<u64> {
        let url = self.url.clone();
        block_on_thread(async move {
            let client = connect(&url).await?;
            let row = client
                .query_one(
                    "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .context("counting backends")?;
            anyhow::Ok(row.get::<_, i64>("n") as u64)
        })
    }

    /// Terminates every backend of this database whose last query was `LISTEN …` (the
    /// change-feed connections); returns how many were terminated.
    pub async fn terminate_listeners(&self) -> anyhow::Result<u64> {
        self.terminate_where("query ILIKE 'LISTEN%'", &[]).await
    }

    /// Terminates every backend of this database with this `application_name`; returns how
    /// many were terminated.
    pub async fn terminate_application(&self, application_name: &str) -> anyhow::Result<u64> {
        self.terminate_where("application_name = $1", &[&application_name])
            .await
    }

    async fn terminate_where(
        &self,
        cond: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> anyhow::Result<u64> {
        let client = connect(&self.url).await?;
        let q = format!(
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND {cond}"
        );
        let rows = client
            .query(&q, params)
            .await
            .context("pg_terminate_backend")?;
        Ok(rows
            .iter()
            .filter(|r| r.try_get::<_, bool>("ok").unwrap_or(false))
            .count() as u64)
    }

    fn external(admin_url: &str) -> anyhow::Result<PgServer> {
        let db_name = format!("xpod_test_{}", unique_suffix());
        let url = with_database(admin_url, &db_name)?;
        let create = format!("CREATE DATABASE {}", quote_ident(&db_name));
        let admin = admin_url.to_string();
        block_on_thread(async move { sql(&admin, &create).await })
            .with_context(|| format!("creating database {db_name} on {}", redact(admin_url)))?;
        Ok(PgServer {
            url,
            kind: Kind::External {
                admin_url: admin_url.to_string(),
                db_name,
            },
        })
    }

    fn cluster(
        initdb: &Path,
        pg_ctl: &Path,
        also: Option<std::net::IpAddr>,
    ) -> anyhow::Result<PgServer> {
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("xpod-pg-{}", unique_suffix()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // From here on, dropping `server` cleans up whatever exists.
        let mut server = PgServer {
            url: String::new(),
            kind: Kind::Cluster {
                dir: dir.clone(),
                pg_ctl: pg_ctl.to_path_buf(),
                as_postgres,
            },
        };
        if as_postgres {
            run(Command::new("chmod").arg("755").arg(&dir))?;
            run(Command::new("chown").arg("postgres:").arg(&dir))?;
        }
        let data = dir.join("data");
        run(pg_command(as_postgres, initdb).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
        ]))
        .context("initdb")?;
        if let Some(ip) = also {
            // initdb's trust lines cover loopback only: let the namespace's side in too.
            use std::io::Write as _;
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .context("opening pg_hba.conf")?;
            let net = match ip {
                std::net::IpAddr::V4(v4) => {
                    let o = v4.octets();
                    format!("{}.{}.{}.0/24", o[0], o[1], o[2])
                }
                std::net::IpAddr::V6(_) => format!("{ip}/64"),
            };
            writeln!(hba, "host all all {net} trust").context("writing pg_hba.conf")?;
        }

        let port = free_port()?;
        let log = dir.join("log");
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1{} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            dir.display(),
            also.map(|ip| format!(",{ip}")).unwrap_or_default()
        );
        std::fs::write(dir.join("opts"), &opts).context("saving the options")?;
        let started = run(pg_command(as_postgres, pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &opts, "start"]));
        if let Err(e) = started {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = tail.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            bail!("pg_ctl start failed: {e:#}\nserver log:\n{tail}");
        }
        server.url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
        Ok(server)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Cluster {
                dir,
                pg_ctl,
                as_postgres,
            } => {
                if dir.join("data").join("postmaster.pid").exists() {
                    let _ = pg_command(*as_postgres, pg_ctl)
                        .arg("-D")
                        .arg(dir.join("data"))
                        .args(["-m", "immediate", "-w", "stop"])
                        .output();
                }
                let _ = std::fs::remove_dir_all(dir);
            }
            Kind::External { admin_url, db_name } => {
                let drop_sql = format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(db_name)
                );
                let admin = admin_url.clone();
                if let Err(e) = block_on_thread(async move { sql(&admin, &drop_sql).await }) {
                    eprintln!("warning: dropping test database {db_name}: {e:#}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- helpers

/// `initdb` and `pg_ctl`: the highest version under `/usr/lib/postgresql/*/bin`, else `PATH`.
fn find_binaries() -> Option<(PathBuf, PathBuf)> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            Some((v?, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some((bin.join("initdb"), bin.join("pg_ctl")));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        let (i, c) = (dir.join("initdb"), dir.join("pg_ctl"));
        if i.is_file() && c.is_file() {
            return Some((i, c));
        }
    }
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `bin` directly, or via `runuser -u postgres --` when running as root (PostgreSQL refuses root).
fn pg_command(as_postgres: bool, bin: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(l.local_addr()?.port())
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{nanos:x}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The URL without its password (for messages).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<database url>".into();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// The database name in a `postgres://` URL.
fn database_of(url: &str) -> anyhow::Result<String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("not a URL"))?;
    let path = rest.find('/').map(|i| &rest[i + 1..]).unwrap_or("");
    let db = path.split('?').next().unwrap_or("");
    Ok(if db.is_empty() {
        "postgres".into()
    } else {
        db.to_string()
    })
}

/// The same URL pointing at database `db`.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow!("XPOD_TEST_PG_URL must be a postgres:// or postgresql:// URL"))?;
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    Ok(format!("{scheme}://{authority}/{db}{query}"))
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Runs one statement on a new connection.
pub async fn sql(url: &str, statement: &str) -> anyhow::Result<()> {
    let client = connect(url).await?;
    client
        .batch_execute(statement)
        .await
        .with_context(|| statement.to_string())?;
    Ok(())
}

/// Runs a future to completion on a fresh runtime in a new thread: usable from sync code
/// (`start`, `Drop`) even when called inside a tokio runtime.
fn block_on_thread<F, T>(fut: F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), fut).await })
            .map_err(|_| anyhow!("timed out"))?
    })
    .join()
    .map_err(|_| anyhow!("helper thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            with_database("postgres://u:p@h:5/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h", "x").unwrap(),
            "postgresql://h/x"
        );
        assert_eq!(database_of("postgresql://h:1/abc?x=1").unwrap(), "abc");
        assert_eq!(database_of("postgresql://h:1").unwrap(), "postgres");
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
