//! Addresses a tenant may not make the node reach on their behalf (webhook destinations, and
//! the destinations a sandbox with network may not reach, `sandbox::net`):
//! every range of the IANA IPv4 and IPv6 Special-Purpose Address Registries that is not
//! globally reachable, multicast, and the IPv6 forms that embed or translate an IPv4 address
//! (IPv4-mapped and -compatible, NAT64, 6to4, Teredo), which could lead back to a private one.
//! [`special`] names the range, so a refusal says why.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 ranges refused: (network, prefix length, name); the first match names an address.
const V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" 0.0.0.0/8"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private-use 10.0.0.0/8"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space (CGNAT) 100.64.0.0/10",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback 127.0.0.0/8"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local 169.254.0.0/16",
    ),
    (
        Ipv4Addr::new(172, 16, 0, 0),
        12,
        "private-use 172.16.0.0/12",
    ),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments 192.0.0.0/24",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation 192.0.2.0/24",
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "6to4 relay anycast 192.88.99.0/24",
    ),
    (
        Ipv4Addr::new(192, 168, 0, 0),
        16,
        "private-use 192.168.0.0/16",
    ),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        "benchmarking 198.18.0.0/15",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation 198.51.100.0/24",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation 203.0.113.0/24",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast 224.0.0.0/4"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "limited broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved 240.0.0.0/4"),
];

/// IPv6 ranges refused: (network, prefix length, name). IPv4-mapped addresses are judged by
/// the IPv4 address they carry (see [`special`]).
const V6: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        128,
        "unspecified ::/128",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1),
        128,
        "loopback ::1/128",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "IPv4-compatible ::/96",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        "NAT64 64:ff9b::/96",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use IPv4/IPv6 translation 64:ff9b:1::/48",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only 100::/64",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments (Teredo among them) 2001::/23",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation 2001:db8::/32",
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        "6to4 2002::/16",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation 3fff::/20",
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        "segment routing (SRv6) SIDs 5f00::/16",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local fc00::/7",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "link-local fe80::/10",
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (deprecated) fec0::/10",
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "multicast ff00::/8",
    ),
];

/// Every refused range, IPv4 then IPv6: (network, prefix length, name).
pub static RANGES: std::sync::LazyLock<Vec<(IpAddr, u8, &'static str)>> =
    std::sync::LazyLock::new(|| {
        V4.iter()
            .map(|(n, l, name)| (IpAddr::V4(*n), *l, *name))
            .chain(V6.iter().map(|(n, l, name)| (IpAddr::V6(*n), *l, *name)))
            .collect()
    });

fn within(ip: u128, net: u128, len: u8, bits: u32) -> bool {
    let shift = bits - u32::from(len);
    len == 0 || (ip >> shift) == (net >> shift)
}

/// The special-purpose range `ip` is in, by name; `None` for a globally reachable address.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => V4
            .iter()
            .find(|(net, len, _)| within(u32::from(v4).into(), u32::from(*net).into(), *len, 32))
            .map(|(_, _, name)| *name),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special(IpAddr::V4(v4));
            }
            V6.iter()
                .find(|(net, len, _)| within(u128::from(v6), u128::from(*net), *len, 128))
                .map(|(_, _, name)| *name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_range_is_refused_and_named() {
        let table: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private-use")),
            ("172.16.0.1", Some("private-use")),
            ("172.31.255.255", Some("private-use")),
            ("192.168.1.1", Some("private-use")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("this network")),
            ("100.64.0.1", Some("CGNAT")),
            ("100.127.255.255", Some("CGNAT")),
            ("192.0.0.8", Some("IETF")),
            ("192.0.2.7", Some("documentation")),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.51.100.1", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("192.88.99.1", Some("6to4 relay")),
            ("224.0.0.251", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private-use")),
            ("::127.0.0.1", Some("IPv4-compatible")),
            ("::10.0.0.1", Some("IPv4-compatible")),
            ("64:ff9b::a00:1", Some("NAT64")),
            ("64:ff9b::808:808", Some("NAT64")),
            ("64:ff9b:1::1", Some("translation")),
            ("100::1", Some("discard")),
            ("2001::1", Some("Teredo")),
            ("2001:db8::1", Some("documentation")),
            ("2002:a00:1::1", Some("6to4")),
            ("3fff::1", Some("documentation")),
            ("5f00::1", Some("SRv6")),
            ("fd00::1", Some("unique local")),
            ("fd00:ec2::254", Some("unique local")),
            ("fe80::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            // Globally reachable.
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("100.128.0.1", None),
            ("172.32.0.1", None),
            ("198.20.0.1", None),
            ("2606:4700::1111", None),
            ("2a00:1450::1", None),
            ("::ffff:8.8.8.8", None),
        ];
        for (ip, want) in table {
            let got = special(ip.parse().unwrap());
            match want {
                Some(part) => assert!(
                    got.is_some_and(|n| n.contains(part)),
                    "{ip}: expected a range named like {part:?}, got {got:?}"
                ),
                None => assert_eq!(got, None, "{ip} is globally reachable"),
            }
        }
    }
}
