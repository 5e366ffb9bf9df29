//! `network: true`: outbound internet only.
//!
//! The sandbox keeps the network namespace bubblewrap made for it (it never shares the host's:
//! no host loopback, no host abstract sockets). Once it runs, the node (root) joins that
//! namespace from outside and:
//! 1. loads an nftables table `inet xpod` whose output chain drops every special-purpose
//!    destination ([`crate::special_ip::RANGES`]: loopback beyond the sandbox's own `lo`,
//!    link-local and metadata addresses, RFC 1918, ULA, CGNAT, NAT64, …) and every address of
//!    the host itself (so a cluster service on a public address of this host is out of reach
//!    too), except slirp4netns's DNS forwarder `10.0.2.3:53`;
//! 2. starts `slirp4netns --disable-host-loopback` on it: a user-mode TCP/IP stack whose
//!    connections leave from the host like any client's (`tap0`, 10.0.2.100/24, default route
//!    via 10.0.2.2, which the rules drop as well).
//!
//! The sandbox's processes have no capabilities in their namespace, so they cannot change the
//! rules. `/etc/resolv.conf` in the sandbox names the forwarder. Needs root, `slirp4netns` and
//! `nft` (Debian packages `slirp4netns`, `nftables`); without them a sandbox with network does
//! not start, with a message saying which is missing. The port route still connects inside the
//! sandbox's own namespace (its supervisor dials its own 127.0.0.1).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// slirp4netns's DNS forwarder inside the sandbox.
pub const DNS: &str = "10.0.2.3";

/// The sandbox side of its network: slirp4netns, killed with the sandbox.
pub struct Net {
    _slirp: tokio::process::Child,
}

/// The nftables ruleset of a sandbox with network (`host` = the host's own addresses).
pub fn ruleset(host: &[IpAddr]) -> String {
    let mut r = String::from(
        "table inet xpod {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    oifname \"lo\" accept\n",
    );
    let _ = writeln!(r, "    ip daddr {DNS} udp dport 53 accept");
    let _ = writeln!(r, "    ip daddr {DNS} tcp dport 53 accept");
    let family = |ip: &IpAddr| if ip.is_ipv4() { "ip" } else { "ip6" };
    for (net, len, _) in crate::special_ip::RANGES.iter() {
        let _ = writeln!(r, "    {} daddr {net}/{len} drop", family(net));
    }
    for ip in host {
        let _ = writeln!(r, "    {} daddr {ip} drop", family(ip));
    }
    r.push_str("  }\n}\n");
    r
}

/// Every address of this host's interfaces.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list freed by freeifaddrs below; each
    // sockaddr is read according to its own family.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut p = list;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out.sort();
    out.dedup();
    out
}

/// The first child of bwrap: the sandbox's PID 1 side, inside its network namespace.
fn sandbox_pid(bwrap: u32) -> anyhow::Result<u32> {
    let path = format!("/proc/{bwrap}/task/{bwrap}/children");
    let children = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .context("bwrap has no child: the sandbox is not running")
}

/// Runs `cmd` inside the network namespace `netns` (setns between fork and exec).
fn in_netns(cmd: &mut tokio::process::Command, netns: &OwnedFd) {
    let fd = netns.as_raw_fd();
    // SAFETY: setns(2) is async-signal-safe; the descriptor stays open until after spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Gives the sandbox whose bwrap is `bwrap` its outbound-only network; returns once it is up.
/// slirp4netns's own messages go to `log` (the sandbox's log file).
pub async fn attach(bwrap: u32, log: &std::path::Path) -> anyhow::Result<Net> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("a sandbox with network needs the node to run as root (it joins the sandbox's network namespace to filter it)");
    }
    let pid = sandbox_pid(bwrap)?;
    let netns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .context("opening the sandbox's network namespace")?
        .into();

    let mut nft = tokio::process::Command::new("nft");
    nft.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    in_netns(&mut nft, &netns);
    let mut child = nft
        .spawn()
        .context("running nft (apt-get install nftables)")?;
    let rules = ruleset(&host_addresses());
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .context("nft did not finish within 10 s")??;
    if !out.status.success() {
        bail!(
            "nft refused the sandbox's rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    // slirp4netns writes "1" to its ready descriptor (3) once tap0 is configured.
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors that we own from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("making a pipe");
    }
    // SAFETY: both descriptors were just returned by pipe2.
    let (ready_r, ready_w) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w = ready_w.as_raw_fd();
    let mut slirp = tokio::process::Command::new("slirp4netns");
    slirp
        .args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--ready-fd=3",
            // By path: given a pid, slirp4netns would also join the sandbox's user namespace
            // and lose the right to enter its network namespace.
            "--netns-type=path",
            &format!("/proc/{pid}/ns/net"),
            "tap0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(log)?,
        )
        .kill_on_drop(true);
    // SAFETY: dup2 is async-signal-safe (and clears close-on-exec on descriptor 3).
    unsafe {
        slirp.pre_exec(move || {
            if w == 3 {
                libc::fcntl(w, libc::F_SETFD, 0);
            } else if libc::dup2(w, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let slirp = slirp
        .spawn()
        .context("running slirp4netns (apt-get install slirp4netns)")?;
    drop(ready_w);
    // (A blocking read on tokio's file pool; killing slirp4netns on a timeout ends it.)
    let mut ready = tokio::fs::File::from_std(std::fs::File::from(ready_r));
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(10), ready.read(&mut byte)).await {
        Ok(Ok(1)) => Ok(Net { _slirp: slirp }),
        Ok(_) => bail!(
            "slirp4netns ended before the sandbox's network was up: {}",
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ")
        ),
        Err(_) => bail!("slirp4netns did not bring the sandbox's network up within 10 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_drop_special_ranges_and_the_host_but_let_dns_through() {
        let r = ruleset(&["192.0.2.2".parse().unwrap(), "2001:db8::5".parse().unwrap()]);
        for line in [
            "oifname \"lo\" accept",
            "ip daddr 10.0.2.3 udp dport 53 accept",
            "ip daddr 127.0.0.0/8 drop",
            "ip daddr 10.0.0.0/8 drop",
            "ip daddr 169.254.0.0/16 drop",
            "ip daddr 100.64.0.0/10 drop",
            "ip6 daddr fc00::/7 drop",
            "ip6 daddr ::1/128 drop",
            "ip daddr 192.0.2.2 drop",
            "ip6 daddr 2001:db8::5 drop",
        ] {
            assert!(r.contains(line), "{line} missing from\n{r}");
        }
        let dns = r.find("10.0.2.3 udp").unwrap();
        let private = r.find("10.0.0.0/8 drop").unwrap();
        assert!(dns < private, "the DNS exception comes before the drop");
    }
}
