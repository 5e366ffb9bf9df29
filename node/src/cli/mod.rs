//! The command line. `xpod up` runs a node; the other commands talk to a running node's API.
//!
//! - this file: the command tree and its `--help`, `up`, `config`, `ca`, `dns`, `certs`;
//! - [`remote`]: what the remote commands share (`--server`, `--key`, `--json`, the client);
//! - [`keys`]: API keys and join tokens; [`nodes`]: nodes; [`pods`]: pods;
//!   [`sandbox`]: sandboxes; [`shell`]: a terminal to a terminal WebSocket; [`service`]: the node as a systemd service; [`tunnel`]: services
//!   and forwards changed at runtime, `reload`.

pub mod keys;
pub mod nodes;
pub mod pods;
pub mod remote;
pub mod sandbox;
pub mod service;
pub mod shell;
pub mod tunnel;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use http::Method;
use xpod_config::{Config, LogFormat};

use remote::{client, print, Remote};

use crate::api_types::cluster::{Certs, DnsRecords, RenewRequested};
use crate::client::Answer;

#[derive(Parser)]
#[command(
    name = "xpod",
    version,
    about = "xpod: a Solid pod server that runs as one binary on every node of a cluster",
    long_about = "xpod serves Solid pods (LDP resources over HTTP). `xpod up` runs a node: alone it needs \
nothing external (embedded SQLite metadata, local-filesystem objects, http://127.0.0.1:8080); as a center \
it shares PostgreSQL with other centers. The other commands manage a running node through its API."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (serves until SIGINT/SIGTERM, then drains in-flight requests).
    #[command(
        long_about = "Run a node. Configuration: defaults, then the TOML file (--config or XPOD_CONFIG), \
then XPOD_* environment variables (and the old CSS_* ones as aliases), then these flags. On the first start \
of a lone node an admin API key is created, printed once and saved to <data-dir>/admin.key (mode 0600)."
    )]
    Up(UpArgs),
    /// Run an edge node: `--join HOST:PORT --token xpt_…` the first time, then just the data dir.
    #[command(
        long_about = "Run an edge node (role = \"edge\"). The first start joins the cluster: \
--join names a center's QUIC endpoint (HOST:PORT), --token a join token from `xpod tokens create`. The \
edge verifies the center against the token's CA fingerprint, gets a certificate for its node id and \
saves it (node.crt, node.key, ca.crt, centers) in the data dir. Later starts need only --data-dir."
    )]
    Edge(UpArgs),
    /// Check a configuration and print it as resolved (secrets redacted).
    Config(ConfigArgs),
    /// Manage pods on a running node (admin key).
    #[command(subcommand)]
    Pods(pods::PodsCmd),
    /// Manage API keys on a running node (admin key).
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// The cluster CA: create it, issue node certificates (local files, no server needed).
    #[command(subcommand)]
    Ca(CaCmd),
    /// Nodes of the cluster: presence, grants, revocation (admin key).
    #[command(subcommand)]
    Nodes(nodes::NodesCmd),
    /// The cluster's DNS zone as a center serves it (admin key).
    #[command(subcommand)]
    Dns(DnsCmd),
    /// Join tokens for edges on a running node (admin key).
    #[command(subcommand, alias = "token")]
    Tokens(keys::TokensCmd),
    /// HTTPS certificates obtained by ACME (admin key).
    #[command(subcommand, alias = "cert")]
    Certs(CertsCmd),
    /// Sandboxes: create, list, run commands, read their output, delete (a key with the
    /// `sandbox` scope, or an admin key).
    #[command(subcommand, alias = "sandboxes")]
    Sandbox(sandbox::SandboxCmd),
    /// This node as a systemd service: install (and start), uninstall, status (root).
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Re-read a running node's configuration file, as SIGHUP does: an edge's services and a
    /// center's TCP forwards change at once; other changed settings are named (they take a
    /// restart). An invalid file changes nothing.
    Reload {
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// An edge's services and a center's TCP forwards on a running node, changed without a
    /// restart (until the next reload or restart).
    #[command(subcommand)]
    Tunnel(tunnel::TunnelCmd),
    /// Internal: PID 1 of a sandbox (started by the node inside bubblewrap).
    #[command(hide = true)]
    SandboxInit {
        /// The inherited descriptor of the control channel to the node.
        #[arg(long, default_value_t = crate::sandbox::ctl::CTL_FD)]
        ctl_fd: i32,
        /// The limits, JSON.
        #[arg(long)]
        limits: String,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// The certificates in the cluster's store (names, validity, renewal time, which center
    /// obtained them), what this node serves, and its ACME manager's last error and backoff.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Renew the centers' certificate now (whichever center takes the ACME lease orders it;
    /// every center serves the new one within seconds, without a restart).
    Renew {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create the cluster CA in <data-dir>/ca.crt and ca.key (0600); never replaces one.
    Init {
        #[arg(long, default_value = "./xpod-data")]
        data_dir: PathBuf,
        /// The cluster's name, written into the CA certificate.
        #[arg(long, default_value = "xpod")]
        name: String,
    },
    /// Issue a node certificate signed by the CA in <data-dir> into --out (node.crt, node.key, ca.crt).
    Issue {
        #[arg(long, default_value = "./xpod-data")]
        data_dir: PathBuf,
        /// The node id the certificate proves (1–63 of a-z, 0-9, '-').
        #[arg(long)]
        node_id: String,
        /// center or edge.
        #[arg(long, default_value = "center")]
        role: String,
        /// Extra DNS names or IP addresses of the node; repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Directory to write into (created; existing key files are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the CA fingerprint (what join tokens carry).
    Fingerprint {
        #[arg(long, default_value = "./xpod-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DnsCmd {
    /// Print the zone as served, in zone-file form (SOA, NS, centers, pods, edges); the
    /// answers follow migrations and presence, so this is a snapshot.
    Records {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args)]
struct UpArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "XPOD_CONFIG")]
    config: Option<PathBuf>,
    /// Where metadata, objects, the node id and the admin key live [default: ./xpod-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// Edge only: join the cluster through this center's QUIC endpoint (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", requires = "token")]
    join: Option<String>,
    /// Edge only: the join token (xpt_<id>.<secret>.<fingerprint>).
    #[arg(
        long,
        requires = "join",
        hide_env_values = true,
        env = "XPOD_JOIN_TOKEN"
    )]
    token: Option<String>,
}

#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "XPOD_CONFIG")]
    config: Option<PathBuf>,
}

/// Parses the command line and runs the command. Errors are one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::SandboxInit { ctl_fd, limits } = &cli.command {
        // Before any runtime: its threads would count against the sandbox's process limit.
        let limits: crate::sandbox::Limits = match serde_json::from_str(limits) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: --limits: {e}");
                return ExitCode::FAILURE;
            }
        };
        limits.apply_nproc();
        return match crate::sandbox::supervisor::main(*ctl_fd, limits) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if !matches!(cli.command, Command::Up(_) | Command::Edge(_)) {
        // A client command piped into `head` ends quietly on the closed pipe, as Unix tools do,
        // instead of panicking in println!. (Not for a node: it writes to its children's pipes.)
        // SAFETY: no other thread exists yet.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Up(args) => up(args, false).await,
        Command::Edge(args) => up(args, true).await,
        Command::Config(args) => {
            let mut config = load_config(args.config.as_deref(), None, None)?;
            config.resolve_node_id()?;
            println!("{config:#?}");
            Ok(())
        }
        Command::Pods(cmd) => pods::run(cmd).await,
        Command::Keys(cmd) => keys::keys(cmd).await,
        Command::Ca(cmd) => ca(cmd),
        Command::Tokens(cmd) => keys::tokens(cmd).await,
        Command::Nodes(cmd) => nodes::run(cmd).await,
        Command::Dns(DnsCmd::Records { remote }) => dns_records(remote).await,
        Command::Certs(CertsCmd::List { remote }) => certs_list(remote).await,
        Command::Certs(CertsCmd::Renew { remote }) => certs_renew(remote).await,
        Command::Sandbox(cmd) => sandbox::run(cmd).await,
        Command::Service(cmd) => service::run(cmd),
        Command::Reload { remote } => tunnel::reload(remote).await,
        Command::Tunnel(cmd) => tunnel::run(cmd).await,
        Command::SandboxInit { .. } => unreachable!("handled before the runtime starts"),
    }
}

fn load_config(
    file: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Config> {
    // vars_os: a non-UTF-8 variable elsewhere in the environment must not crash the node.
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let mut config = Config::load(file, &env)?;
    if let Some(d) = data_dir {
        config.data_dir = d;
    }
    if let Some(l) = listen {
        config.http.listen = l;
    }
    config.validate()?;
    Ok(config)
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(
        std::env::var("XPOD_LOG").unwrap_or_else(|_| config.log.level.clone()),
    )
    .context("log.level is not a valid filter (e.g. `info` or `xpod_node=debug,info`)")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

async fn up(args: UpArgs, edge: bool) -> anyhow::Result<()> {
    // Load and validate everything before binding a socket.
    let mut config = load_config(args.config.as_deref(), args.data_dir.clone(), args.listen)?;
    if edge {
        config.role = xpod_config::Role::Edge;
    }
    // SIGHUP and `xpod reload` load the configuration again the same way.
    let (file, data_dir, listen) = (args.config.clone(), args.data_dir.clone(), args.listen);
    crate::reload::set_source(Box::new(move || {
        let mut c = load_config(file.as_deref(), data_dir.clone(), listen)?;
        if edge {
            c.role = xpod_config::Role::Edge;
        }
        Ok(c)
    }));
    init_tracing(&config)?;
    let threads = config
        .tunnel
        .threads
        .unwrap_or(xpod_tunnel::plane::DEFAULT_THREADS);
    xpod_tunnel::plane::configure(threads).context("tunnel.threads")?;
    if let (Some(center), Some(token)) = (&args.join, &args.token) {
        if config.role != xpod_config::Role::Edge {
            anyhow::bail!("--join is for edges: use `xpod edge --join …` (or set role = \"edge\")");
        }
        let node_id = config.resolve_node_id()?;
        if config.data_dir.join(crate::edges::NODE_CERT).exists() {
            // A service unit may keep the join flags; joining once is enough.
            tracing::info!(node_id = %node_id, "already joined (node.crt in the data dir); --join and --token are ignored");
        } else {
            crate::edges::edge::join(
                &config.data_dir,
                center,
                token,
                &node_id,
                config.tunnel.transport,
            )
            .await?;
            tracing::info!(node_id = %node_id, center = %center, "joined the cluster; identity saved in the data dir");
        }
    }
    let listeners = crate::Listeners::bind(&config).await?;
    crate::run(config, listeners, crate::shutdown_signal()).await
}

fn ca(cmd: CaCmd) -> anyhow::Result<()> {
    use crate::cluster_ca;
    match cmd {
        CaCmd::Init { data_dir, name } => {
            let ca = cluster_ca::init(&data_dir, &name)?;
            println!("created the cluster CA in {}", data_dir.display());
            println!("fingerprint: {}", ca.fingerprint());
            println!(
                "keep {} secret: it signs every node certificate",
                data_dir.join(cluster_ca::CA_KEY).display()
            );
        }
        CaCmd::Issue {
            data_dir,
            node_id,
            role,
            sans,
            out,
        } => {
            let role: xpod_tunnel::identity::NodeRole = role
                .parse()
                .map_err(|e| anyhow::anyhow!("--role `{role}`: {e}"))?;
            let ca = cluster_ca::load(&data_dir)?;
            for path in cluster_ca::issue(&ca, &node_id, role, &sans, &out)? {
                println!("wrote {}", path.display());
            }
        }
        CaCmd::Fingerprint { data_dir } => match cluster_ca::fingerprint(&data_dir)? {
            Some(fp) => println!("{fp}"),
            None => anyhow::bail!(
                "no cluster CA in {} (run `xpod ca init`)",
                data_dir.display()
            ),
        },
    }
    Ok(())
}

async fn dns_records(remote: Remote) -> anyhow::Result<()> {
    let a: Answer<DnsRecords> = client(&remote)?.get("/.cluster/dns/records").await?;
    print(&remote, &a, |z| {
        println!("; zone {}", remote::or_dash(&z.zone));
        for r in &z.records {
            println!("{:<40} {:>6} IN {:<5} {}", r.name, r.ttl, r.kind, r.data);
        }
    });
    Ok(())
}

async fn certs_list(remote: Remote) -> anyhow::Result<()> {
    let a: Answer<Certs> = client(&remote)?.get("/.cluster/certs").await?;
    let date = |ms: Option<i64>| match ms {
        Some(ms) if ms > 0 => httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
        ),
        _ => "-".to_string(),
    };
    print(&remote, &a, |v| {
        println!(
            "{:<10} {:<31} {:<31} {:<12} NAMES",
            "ID", "EXPIRES", "RENEWS", "ISSUED BY"
        );
        for c in &v.certificates {
            println!(
                "{:<10} {:<31} {:<31} {:<12} {}",
                c.id,
                date(Some(c.not_after)),
                date(Some(c.renew_at)),
                c.issued_by,
                c.names.join(", ")
            );
        }
        match &v.serving {
            Some(sv) => println!(
                "node {} serves: {} certificate, serial {}, expires {}",
                v.node,
                sv.source,
                sv.serial,
                date(Some(sv.not_after))
            ),
            None => println!("node {} serves no certificate", v.node),
        }
        let m = &v.manager;
        if let Some(e) = &m.last_error {
            println!(
                "last ACME error ({} in a row, next attempt {}): {e}",
                m.failures,
                date(m.next_attempt_at)
            );
        }
    });
    Ok(())
}

async fn certs_renew(remote: Remote) -> anyhow::Result<()> {
    let a: Answer<RenewRequested> = client(&remote)?
        .send(Method::POST, "/.cluster/certs/renew", None::<&()>)
        .await?;
    print(&remote, &a, |_| {
        println!("renewal requested; `xpod certs list` shows the new certificate once it is issued")
    });
    Ok(())
}
