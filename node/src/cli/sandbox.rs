//! `xpod sandbox …`: the sandbox API from the command line (`--server`, `--key`, `--json` as
//! for the other remote commands). `exec` streams the command's output to this process's
//! stdout/stderr as it arrives and exits with the command's exit code; `shell` is an
//! interactive terminal ([`super::shell`]).

use std::io::Write as _;

use base64::Engine as _;
use clap::Subcommand;
use http::Method;
use http_body_util::BodyExt as _;
use std::collections::BTreeMap;

use super::remote::{client, or_dash, print, Remote};
use crate::api_types::sandboxes::{CreateSandbox, CreatedSandbox, Logs, SandboxList};
use crate::client::Answer;
use crate::sandbox::internal::ExecBody;
use crate::sandbox::model::{Resources, Sandbox};
use crate::sandbox::proto::Event;
use crate::sandbox::replay::LogEntry;

#[derive(Subcommand)]
pub(crate) enum SandboxCmd {
    /// Create a sandbox; prints its id (the access token of its private ports goes to stderr).
    Create {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        name: Option<String>,
        /// `host` (the host's /usr, read-only) or an image the nodes offer.
        #[arg(long, default_value = "host")]
        image: String,
        /// CPU cores.
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory, MiB (per-process address space limit).
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Processes and threads at once.
        #[arg(long)]
        max_procs: Option<u64>,
        /// Idle timeout, seconds (no exec and no port traffic for this long stops it).
        #[arg(long)]
        timeout: Option<u64>,
        /// Environment of every command, KEY=VALUE (repeat).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Give the sandbox the host's network (default: its own loopback only).
        #[arg(long)]
        network: bool,
        /// Ports reachable without credentials.
        #[arg(long)]
        public: bool,
        /// Place it in this region only.
        #[arg(long)]
        region: Option<String>,
        /// Place it on this node only.
        #[arg(long)]
        node: Option<String>,
    },
    /// List sandboxes (newest first).
    List {
        #[command(flatten)]
        remote: Remote,
        /// Only this status: pending, running, stopped, failed, archived.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one sandbox.
    Get {
        #[command(flatten)]
        remote: Remote,
        id: String,
    },
    /// Run a command in a sandbox: `xpod sandbox exec ID -- CMD ARGS…`. Output streams as it
    /// comes; the exit code is the command's.
    Exec {
        #[command(flatten)]
        remote: Remote,
        id: String,
        /// Text for the command's stdin.
        #[arg(long, conflicts_with = "stdin_file")]
        stdin: Option<String>,
        /// A file whose bytes are the command's stdin (`-`: this process's stdin).
        #[arg(long)]
        stdin_file: Option<std::path::PathBuf>,
        /// Wall-clock limit, seconds (the command is killed after it; exit code 137).
        #[arg(long)]
        timeout: Option<u64>,
        /// Working directory inside the sandbox (default /work).
        #[arg(long)]
        cwd: Option<String>,
        /// Extra environment, KEY=VALUE (repeat).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// An interactive shell in a sandbox, in a terminal: `xpod sandbox shell ID` (the
    /// sandbox's shell) or `xpod sandbox shell ID -- CMD ARGS…`. Keys go to the sandbox as
    /// typed (^C included), the window's size follows this one; the exit code is the
    /// command's. Piped stdin works too (its end is ^D).
    Shell {
        #[command(flatten)]
        remote: Remote,
        id: String,
        /// Working directory inside the sandbox (default /work).
        #[arg(long)]
        cwd: Option<String>,
        /// The program and its arguments (default: the sandbox's shell).
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Print the output of earlier commands (from a cursor; `--follow` keeps polling).
    Logs {
        #[command(flatten)]
        remote: Remote,
        id: String,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        cursor: u64,
        /// Keep printing new output (every second) until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Delete a sandbox now, or archive it and delete it after `--grace` seconds.
    Delete {
        #[command(flatten)]
        remote: Remote,
        id: String,
        #[arg(long, value_name = "SECONDS")]
        grace: Option<u64>,
    },
}

fn env_map(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env {p:?}: expected KEY=VALUE"))?;
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

fn id_path(id: &str) -> anyhow::Result<String> {
    if !crate::sandbox::model::valid_id(id) {
        anyhow::bail!("{id:?} is not a sandbox id (sb + 14 hex digits)");
    }
    Ok(format!("/api/v1/sandboxes/{id}"))
}

/// Writes an event's output to stdout/stderr; the exit code when it ends the command.
fn emit(ev: &Event) -> anyhow::Result<Option<i32>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match ev {
        Event::Stdout { data } => {
            let mut out = std::io::stdout().lock();
            out.write_all(&b64.decode(data)?)?;
            out.flush()?;
        }
        Event::Stderr { data } => {
            let mut err = std::io::stderr().lock();
            err.write_all(&b64.decode(data)?)?;
            err.flush()?;
        }
        Event::End {
            exit_code,
            timed_out,
        } => {
            if *timed_out {
                eprintln!("xpod: the command was killed after its timeout");
            }
            return Ok(Some(*exit_code));
        }
        Event::Error { message } => {
            eprintln!("xpod: {message}");
            return Ok(Some(1));
        }
        _ => {}
    }
    Ok(None)
}

pub(crate) async fn run(cmd: SandboxCmd) -> anyhow::Result<()> {
    match cmd {
        SandboxCmd::Create {
            remote,
            name,
            image,
            cpu,
            memory_mb,
            max_procs,
            timeout,
            env,
            network,
            public,
            region,
            node,
        } => {
            let resources =
                (cpu.is_some() || memory_mb.is_some() || max_procs.is_some()).then(|| {
                    let d = Resources::default();
                    Resources {
                        cpu: cpu.unwrap_or(d.cpu),
                        memory_mb: memory_mb.unwrap_or(d.memory_mb),
                        max_procs: max_procs.unwrap_or(d.max_procs),
                    }
                });
            let body = CreateSandbox {
                name,
                image: Some(image),
                env: env_map(&env)?,
                resources,
                timeout,
                network,
                public,
                region,
                node,
                ..Default::default()
            };
            let a: Answer<CreatedSandbox> = client(&remote)?
                .send(Method::POST, "/api/v1/sandboxes", Some(&body))
                .await?;
            print(&remote, &a, |c| {
                let sb = &c.sandbox;
                println!("{}", sb.id);
                eprintln!(
                    "sandbox {} {} on node {}; access token (shown once): {}",
                    sb.id,
                    sb.status.as_str(),
                    sb.node,
                    c.access_token
                );
            });
            Ok(())
        }
        SandboxCmd::List { remote, status } => {
            let mut path = "/api/v1/sandboxes?order=desc&limit=1000".to_string();
            if let Some(st) = status {
                path.push_str(&format!("&status={st}"));
            }
            let a: Answer<SandboxList> = client(&remote)?.get(&path).await?;
            print(&remote, &a, |list| {
                println!(
                    "{:<17} {:<9} {:<20} {:<8} {:<13} NAME",
                    "ID", "STATUS", "NODE", "IMAGE", "CREATED"
                );
                for sb in &list.sandboxes {
                    let created = httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(sb.created_at.max(0) as u64),
                    );
                    println!(
                        "{:<17} {:<9} {:<20} {:<8} {:<13} {}",
                        sb.id,
                        sb.status.as_str(),
                        sb.node,
                        sb.image,
                        created.get(5..16).unwrap_or("-"),
                        or_dash(&sb.name)
                    );
                }
            });
            Ok(())
        }
        SandboxCmd::Get { remote, id } => {
            let a: Answer<Sandbox> = client(&remote)?.get(&id_path(&id)?).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&a.json).unwrap_or_default()
            );
            Ok(())
        }
        SandboxCmd::Exec {
            remote,
            id,
            stdin,
            stdin_file,
            timeout,
            cwd,
            env,
            cmd,
        } => {
            let mut body = ExecBody {
                cmd,
                env: env_map(&env)?,
                cwd,
                timeout,
                stdin: None,
                stdin_base64: None,
            };
            if let Some(t) = stdin {
                body.stdin = Some(t);
            } else if let Some(f) = stdin_file {
                let bytes = if f.as_os_str() == "-" {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                    b
                } else {
                    std::fs::read(&f)
                        .map_err(|e| anyhow::anyhow!("--stdin-file {}: {e}", f.display()))?
                };
                body.stdin_base64 = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            let resp = client(&remote)?
                .stream(
                    Method::POST,
                    &format!("{}/exec", id_path(&id)?),
                    Some(&body),
                )
                .await?;
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| anyhow::anyhow!("the output stream broke: {e}"))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let entry: LogEntry = serde_json::from_slice(&line).map_err(|e| {
                        anyhow::anyhow!("an output event this xpod does not know: {e}")
                    })?;
                    let code = if remote.json {
                        println!("{}", String::from_utf8_lossy(&line).trim_end());
                        match entry.event {
                            Event::End { exit_code, .. } => Some(exit_code),
                            _ => None,
                        }
                    } else {
                        emit(&entry.event)?
                    };
                    if let Some(code) = code {
                        std::process::exit(code);
                    }
                }
            }
            anyhow::bail!("the output stream ended before the command did")
        }
        SandboxCmd::Shell {
            remote,
            id,
            cwd,
            cmd,
        } => {
            let path = format!("{}/terminal", id_path(&id)?);
            let query = super::shell::query(&cmd, cwd.as_deref());
            let code = super::shell::run(&remote, &path, &query).await?;
            std::process::exit(code);
        }
        SandboxCmd::Logs {
            remote,
            id,
            mut cursor,
            follow,
        } => {
            let api = client(&remote)?;
            loop {
                let a: Answer<Logs> = api
                    .get(&format!("{}/logs?cursor={cursor}", id_path(&id)?))
                    .await?;
                let logs = a.body;
                if logs.truncated && !remote.json {
                    eprintln!(
                        "xpod: older output was dropped (the runner keeps the last 10,000 events)"
                    );
                }
                for entry in &logs.events {
                    if remote.json {
                        println!("{}", serde_json::to_string(entry).unwrap_or_default());
                    } else {
                        emit(&entry.event)?;
                    }
                }
                cursor = logs.cursor;
                if !follow {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        SandboxCmd::Delete { remote, id, grace } => {
            let mut path = id_path(&id)?;
            if let Some(g) = grace {
                path.push_str(&format!("?gracePeriod={g}"));
            }
            let (_, v) = client(&remote)?
                .call(Method::DELETE, &path, None::<&()>)
                .await?;
            // 202 with the archived sandbox; 204 (nothing) when deleted at once.
            let archived: Option<Sandbox> = match grace {
                Some(_) => Some(serde_json::from_value(v.clone()).map_err(|e| {
                    anyhow::anyhow!("the answer is not the sandbox this xpod expects: {e}")
                })?),
                None => None,
            };
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                match (grace, archived) {
                    (Some(g), Some(sb)) => println!(
                        "sandbox {id} archived; deleted in {g} s ({})",
                        sb.status.as_str()
                    ),
                    _ => println!("sandbox {id} deleted"),
                }
            }
            Ok(())
        }
    }
}
