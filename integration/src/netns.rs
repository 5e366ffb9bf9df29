//! A network namespace joined to the host by a veth pair, for tests that need a real network
//! between two processes (UDP blocked with nftables). Needs root, iproute2 and nftables:
//! without them a test fails naming what is missing (it never skips silently).

use std::net::IpAddr;

/// A network namespace joined to the host by a veth pair, removed on drop.
pub struct Netns {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    /// The host's end of the veth pair.
    pub host_if: String,
    /// The namespace's end of the veth pair.
    pub ns_if: String,
    /// The host's address on the pair.
    pub host_ip: IpAddr,
    /// The namespace's address on the pair.
    pub ns_ip: IpAddr,
}

pub fn sh(args: &[&str]) -> std::process::Output {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

pub fn ok(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Needs root, `ip` (iproute2) and `nft`: without them the test fails, naming what is
    /// missing (it never skips silently).
    pub fn create() -> Netns {
        // Unique per process and, within one (`cargo test` runs a binary's tests as threads
        // of one process), per namespace: names and subnets must not clash.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 10;
        let id = std::process::id() % 10_000;
        let subnet = std::process::id() % 250;
        let peer = format!("xub{id}{k}n");
        let n = Netns {
            name: format!("xpod-udpb-{id}-{k}"),
            host_if: format!("xub{id}{k}h"),
            ns_if: peer.clone(),
            host_ip: format!("10.{}.{subnet}.1", 213 + k).parse().unwrap(),
            ns_ip: format!("10.{}.{subnet}.2", 213 + k).parse().unwrap(),
        };
        let added = sh(&["ip", "netns", "add", &n.name]);
        assert!(
            added.status.success(),
            "this test needs root and iproute2 to make a network namespace: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let peer = n.ns_if.clone();
        ok(&[
            "ip", "link", "add", &n.host_if, "type", "veth", "peer", "name", &peer,
        ]);
        ok(&["ip", "link", "set", &peer, "netns", &n.name]);
        ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", n.host_ip),
            "dev",
            &n.host_if,
        ]);
        ok(&["ip", "link", "set", &n.host_if, "up"]);
        n.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", n.ns_ip),
            "dev",
            &peer,
        ]);
        n.exec(&["ip", "link", "set", &peer, "up"]);
        n.exec(&["ip", "link", "set", "lo", "up"]);
        n
    }

    /// Runs `args` inside the namespace; panics with its stderr if it fails.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        ok(&all);
    }

    /// Drops every UDP packet in and out of the namespace (nftables).
    pub fn block_udp(&self) {
        let which = sh(&["nft", "--version"]);
        assert!(which.status.success(), "this test needs nft (nftables)");
        self.exec(&["nft", "add", "table", "inet", "xpod_udpb"]);
        for (chain, hook) in [("out", "output"), ("in", "input")] {
            self.exec(&[
                "nft",
                "add",
                "chain",
                "inet",
                "xpod_udpb",
                chain,
                &format!("{{ type filter hook {hook} priority 0; }}"),
            ]);
            self.exec(&[
                "nft",
                "add",
                "rule",
                "inet",
                "xpod_udpb",
                chain,
                "meta",
                "l4proto",
                "udp",
                "drop",
            ]);
        }
    }

    /// Drops TCP from the namespace to `ip:port` (nftables).
    pub fn block_tcp_to(&self, ip: std::net::IpAddr, port: u16) {
        self.exec(&["nft", "add", "table", "inet", "xpod_tcpb"]);
        self.exec(&[
            "nft",
            "add",
            "chain",
            "inet",
            "xpod_tcpb",
            "out",
            "{ type filter hook output priority 0; }",
        ]);
        let family = if ip.is_ipv4() { "ip" } else { "ip6" };
        self.exec(&[
            "nft",
            "add",
            "rule",
            "inet",
            "xpod_tcpb",
            "out",
            family,
            "daddr",
            &ip.to_string(),
            "tcp",
            "dport",
            &port.to_string(),
            "drop",
        ]);
    }

    /// Lets UDP through again.
    pub fn unblock_udp(&self) {
        self.exec(&["nft", "delete", "table", "inet", "xpod_udpb"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
        let _ = sh(&["ip", "link", "del", &self.host_if]);
    }
}
