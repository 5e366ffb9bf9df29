//! `xpod sandbox …`: the sandbox API from the command line (`--server`, `--key`, `--json` as
//! for the other remote commands). `exec` streams the command's output to this process's
//! stdout/stderr as it arrives and exits with the command's exit code.

use std::io::Write as _;

use base64::Engine as _;
use clap::Subcommand;
use http::Method;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};

use super::remote::{client, print, s, Remote};

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

fn env_map(pairs: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env {p:?}: expected KEY=VALUE"))?;
        m.insert(k.to_string(), json!(v));
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
fn emit(ev: &Value) -> anyhow::Result<Option<i32>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match ev["type"].as_str() {
        Some("stdout") => {
            let mut out = std::io::stdout().lock();
            out.write_all(&b64.decode(s(ev, "data"))?)?;
            out.flush()?;
        }
        Some("stderr") => {
            let mut err = std::io::stderr().lock();
            err.write_all(&b64.decode(s(ev, "data"))?)?;
            err.flush()?;
        }
        Some("end") => {
            if ev["timedOut"].as_bool() == Some(true) {
                eprintln!("xpod: the command was killed after its timeout");
            }
            return Ok(Some(ev["exitCode"].as_i64().unwrap_or(1) as i32));
        }
        Some("error") => {
            eprintln!("xpod: {}", s(ev, "message"));
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
            let mut body = json!({"image": image, "network": network, "public": public, "env": env_map(&env)?});
            let mut resources = serde_json::Map::new();
            for (k, v) in [
                ("cpu", cpu.map(u64::from)),
                ("memoryMb", memory_mb),
                ("maxProcs", max_procs),
            ] {
                if let Some(v) = v {
                    resources.insert(k.into(), json!(v));
                }
            }
            if !resources.is_empty() {
                body["resources"] = Value::Object(resources);
            }
            for (k, v) in [("name", name), ("region", region), ("node", node)] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(t) = timeout {
                body["timeout"] = json!(t);
            }
            let (_, v) = client(&remote)?
                .call(Method::POST, "/api/v1/sandboxes", Some(&body))
                .await?;
            print(&remote, &v, |v| {
                println!("{}", s(v, "id"));
                eprintln!(
                    "sandbox {} {} on node {}; access token (shown once): {}",
                    s(v, "id"),
                    s(v, "status"),
                    s(v, "node"),
                    s(v, "accessToken")
                );
            });
            Ok(())
        }
        SandboxCmd::List { remote, status } => {
            let mut path = "/api/v1/sandboxes?order=desc&limit=1000".to_string();
            if let Some(st) = status {
                path.push_str(&format!("&status={st}"));
            }
            let (_, v) = client(&remote)?.call(Method::GET, &path, None).await?;
            print(&remote, &v, |v| {
                println!(
                    "{:<17} {:<9} {:<20} {:<8} {:<13} NAME",
                    "ID", "STATUS", "NODE", "IMAGE", "CREATED"
                );
                for sb in v["sandboxes"].as_array().into_iter().flatten() {
                    let created = sb["createdAt"].as_i64().map_or("-".into(), |ms| {
                        httpdate::fmt_http_date(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
                        )
                    });
                    println!(
                        "{:<17} {:<9} {:<20} {:<8} {:<13} {}",
                        s(sb, "id"),
                        s(sb, "status"),
                        s(sb, "node"),
                        s(sb, "image"),
                        created.get(5..16).unwrap_or("-"),
                        s(sb, "name")
                    );
                }
            });
            Ok(())
        }
        SandboxCmd::Get { remote, id } => {
            let (_, v) = client(&remote)?
                .call(Method::GET, &id_path(&id)?, None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
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
            let mut body = json!({"cmd": cmd, "env": env_map(&env)?});
            if let Some(t) = stdin {
                body["stdin"] = json!(t);
            } else if let Some(f) = stdin_file {
                let bytes = if f.as_os_str() == "-" {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                    b
                } else {
                    std::fs::read(&f)
                        .map_err(|e| anyhow::anyhow!("--stdin-file {}: {e}", f.display()))?
                };
                body["stdinBase64"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            if let Some(t) = timeout {
                body["timeout"] = json!(t);
            }
            if let Some(c) = cwd {
                body["cwd"] = json!(c);
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
                    let ev: Value = serde_json::from_slice(&line)?;
                    if remote.json {
                        println!("{}", String::from_utf8_lossy(&line).trim_end());
                    }
                    let code = if remote.json {
                        (ev["type"] == "end").then(|| ev["exitCode"].as_i64().unwrap_or(1) as i32)
                    } else {
                        emit(&ev)?
                    };
                    if let Some(code) = code {
                        std::process::exit(code);
                    }
                }
            }
            anyhow::bail!("the output stream ended before the command did")
        }
        SandboxCmd::Logs {
            remote,
            id,
            mut cursor,
            follow,
        } => {
            let api = client(&remote)?;
            loop {
                let (_, v) = api
                    .call(
                        Method::GET,
                        &format!("{}/logs?cursor={cursor}", id_path(&id)?),
                        None,
                    )
                    .await?;
                if v["truncated"].as_bool() == Some(true) && !remote.json {
                    eprintln!(
                        "xpod: older output was dropped (the runner keeps the last 10,000 events)"
                    );
                }
                for ev in v["events"].as_array().into_iter().flatten() {
                    if remote.json {
                        println!("{ev}");
                    } else {
                        emit(ev)?;
                    }
                }
                cursor = v["cursor"].as_u64().unwrap_or(cursor);
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
            let (_, v) = client(&remote)?.call(Method::DELETE, &path, None).await?;
            print(&remote, &v, |v| match grace {
                Some(g) => println!(
                    "sandbox {id} archived; deleted in {g} s ({})",
                    s(v, "status")
                ),
                None => println!("sandbox {id} deleted"),
            });
            Ok(())
        }
    }
}
