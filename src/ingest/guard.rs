//! The SSRF guard: which addresses the fetcher may connect to. It is applied
//! where the address is decided, in the DNS resolver (so a public name that
//! resolves to 127.0.0.1 is refused) and to IP literals on every redirect hop.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone)]
pub struct NetworkGuard {
    allow_private: bool,
    allowed: Vec<IpNet>,
}

impl NetworkGuard {
    pub fn new(allow_private: bool, allowed: &[String]) -> Result<Self, String> {
        let allowed = allowed
            .iter()
            .map(|n| n.parse::<IpNet>().or_else(|_| n.parse::<IpAddr>().map(IpNet::from)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ingest.allow_networks: {e}"))?;
        Ok(Self { allow_private, allowed })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow_private || self.allowed.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }
}

/// IPv4 written as IPv6 (`::ffff:127.0.0.1`) is judged as the IPv4 it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0                                  // "this network"
        || (a == 100 && (64..128).contains(&b))    // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0)          // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b))     // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address: judge that one.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00               // unique local
        || (seg[0] & 0xffc0) == 0xfe80               // link-local
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)    // documentation
        || seg[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_non_public_addresses_by_default() {
        let guard = NetworkGuard::new(false, &[]).unwrap();
        for bad in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(!guard.permits(ip(bad)), "{bad} permitted");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(guard.permits(ip(good)), "{good} refused");
        }
    }

    #[test]
    fn configuration_opens_everything_or_named_networks() {
        assert!(NetworkGuard::new(true, &[]).unwrap().permits(ip("127.0.0.1")));
        let guard = NetworkGuard::new(false, &["127.0.0.1/32".into(), "10.9.0.0/16".into()]).unwrap();
        assert!(guard.permits(ip("127.0.0.1")));
        assert!(guard.permits(ip("10.9.3.4")));
        assert!(!guard.permits(ip("127.0.0.2")));
        assert!(!guard.permits(ip("10.8.0.1")));
        assert!(NetworkGuard::new(false, &["not-a-net".into()]).is_err());
    }
}
