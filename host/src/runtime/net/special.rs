//! Special-purpose addresses a plugin may not reach by name.
//!
//! The tables follow IANA's IPv4 and IPv6 Special-Purpose Address
//! Registries (RFC 6890 and its updates), plus multicast and the cloud
//! metadata addresses. Every entry is refused, even those the registry marks
//! globally reachable (AS112, AMT): no connector needs them, and refusing is
//! the safe side. Prefixes that embed an IPv4 address (IPv4-mapped, NAT64,
//! 6to4) are judged by the address they embed; tunnels whose embedded
//! address is obfuscated (Teredo) are refused outright.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not for plugins to reach by name, if it is special.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// IPv4 entries, most specific first (the first match names the address).
const V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(169, 254, 169, 254), 32, "cloud metadata"),
    (Ipv4Addr::new(0, 0, 0, 0), 8, "this network"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 31, 196, 0), 24, "AS112"),
    (Ipv4Addr::new(192, 52, 193, 0), 24, "AMT"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(192, 175, 48, 0), 24, "AS112"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// What an IPv6 entry means.
#[derive(Clone, Copy)]
enum V6Kind {
    /// Refused, with this name.
    Refused(&'static str),
    /// The IPv4 address in the last 32 bits decides (IPv4-mapped, NAT64).
    EmbedsLast32,
    /// The IPv4 address in bits 16..48 decides (6to4).
    Embeds6to4,
}

/// IPv6 entries, most specific first.
const V6: &[(Ipv6Addr, u8, V6Kind)] = &[
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1),
        128,
        V6Kind::Refused("loopback"),
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        128,
        V6Kind::Refused("unspecified"),
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
        96,
        V6Kind::EmbedsLast32,
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        V6Kind::Refused("IPv4-compatible (deprecated)"),
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        V6Kind::EmbedsLast32,
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        V6Kind::Refused("local-use IPv4/IPv6 translation"),
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        V6Kind::Refused("discard-only"),
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        V6Kind::Refused("dummy prefix"),
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        V6Kind::Refused("Teredo"),
    ),
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0),
        48,
        V6Kind::Refused("benchmarking"),
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        V6Kind::Refused("documentation"),
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        V6Kind::Refused("IETF protocol assignments"),
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        V6Kind::Embeds6to4,
    ),
    (
        Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0),
        48,
        V6Kind::Refused("AS112"),
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        V6Kind::Refused("documentation"),
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        V6Kind::Refused("segment routing"),
    ),
    (
        Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0),
        32,
        V6Kind::Refused("cloud metadata"),
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        V6Kind::Refused("private"),
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        V6Kind::Refused("link-local"),
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        V6Kind::Refused("site-local (deprecated)"),
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        V6Kind::Refused("multicast"),
    ),
];

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let ip = u32::from(ip);
    V4.iter()
        .find(|(net, len, _)| prefix_match(ip.into(), u32::from(*net).into(), *len, 32))
        .map(|(_, _, name)| *name)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let (_, _, kind) = V6
        .iter()
        .find(|(net, len, _)| prefix_match(bits, u128::from(*net), *len, 128))?;
    match kind {
        V6Kind::Refused(name) => Some(name),
        V6Kind::EmbedsLast32 => special_v4(Ipv4Addr::from(bits as u32)),
        V6Kind::Embeds6to4 => special_v4(Ipv4Addr::from((bits >> 80) as u32)),
    }
}

/// Whether the first `len` of `width` bits of `a` and `net` agree.
fn prefix_match(a: u128, net: u128, len: u8, width: u32) -> bool {
    let shift = width - u32::from(len);
    shift >= width || (a >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses from each registry entry (its first, one inside, its last
    /// where the range is wider than one), written out by hand rather than
    /// derived from the tables, so a wrong table entry fails here.
    #[test]
    fn every_registry_entry_is_refused_by_address() {
        let cases = [
            ("0.0.0.0", "this network"),
            ("0.255.255.255", "this network"),
            ("10.0.0.0", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.0", "shared address space"),
            ("100.127.255.255", "shared address space"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.0.1", "link-local"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.255.255", "link-local"),
            ("172.16.0.0", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.0", "IETF protocol assignments"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.0.170", "IETF protocol assignments"),
            ("192.0.0.255", "IETF protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("192.31.196.1", "AS112"),
            ("192.52.193.1", "AMT"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("192.168.0.1", "private"),
            ("192.168.255.255", "private"),
            ("192.175.48.1", "AS112"),
            ("198.18.0.0", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.255", "multicast"),
            ("240.0.0.0", "reserved"),
            ("254.1.2.3", "reserved"),
            ("255.255.255.254", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "IPv4-compatible (deprecated)"),
            ("::8.8.8.8", "IPv4-compatible (deprecated)"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b:1::1", "local-use IPv4/IPv6 translation"),
            ("64:ff9b:1:ffff::1", "local-use IPv4/IPv6 translation"),
            ("100::1", "discard-only"),
            ("100::ffff:ffff:ffff:ffff", "discard-only"),
            ("100:0:0:1::1", "dummy prefix"),
            ("2001::1", "Teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("2001:1::1", "IETF protocol assignments"),
            ("2001:1::2", "IETF protocol assignments"),
            ("2001:2::1", "benchmarking"),
            ("2001:3::1", "IETF protocol assignments"),
            ("2001:4:112::1", "IETF protocol assignments"),
            ("2001:20::1", "IETF protocol assignments"),
            ("2001:1ff:ffff::1", "IETF protocol assignments"),
            ("2001:db8::1", "documentation"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a9fe:a9fe::1", "cloud metadata"),
            ("2002:c0a8:101::1", "private"),
            ("2620:4f:8000::1", "AS112"),
            ("3fff::1", "documentation"),
            ("3fff:fff:ffff::1", "documentation"),
            ("5f00::1", "segment routing"),
            ("fc00::1", "private"),
            ("fdff:ffff::1", "private"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local (deprecated)"),
            ("ff02::1", "multicast"),
        ];
        for (ip, want) in cases {
            assert_eq!(special_purpose(ip.parse().unwrap()), Some(want), "{ip}");
        }
    }

    #[test]
    fn ordinary_public_addresses_are_not_special() {
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.3.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:200::1",
            "2002:808:808::1",
            "64:ff9b::808:808",
            "2a00:1450:4001::200e",
            "3ffe::1",
        ] {
            assert_eq!(special_purpose(ip.parse().unwrap()), None, "{ip}");
        }
    }
}
