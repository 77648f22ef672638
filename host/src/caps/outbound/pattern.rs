//! `grants.outbound` entries, and which addresses count as internal.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// One `grants.outbound` entry: `host`, `*.suffix` or an IP literal, with an
/// optional `:port` (any port when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
    /// Requests to it carry the trace context (`trace = true`).
    pub trace: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `*.example.com` matches `a.example.com` and `a.b.example.com`, not
    /// `example.com`.
    Suffix(String),
    Ip(IpAddr),
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty outbound host".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "outbound host '{s}' must be a host name with an optional :port, not a URL"
            ));
        }
        // `[::1]:8080`, `[::1]`, `host:port`, `host`.
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("outbound host '{s}': unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("outbound host '{s}': unexpected '{after}'")),
            };
            (ip, port)
        } else if s.matches(':').count() > 1 {
            (s, None) // a bare IPv6 address
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| format!("outbound host '{s}': bad port '{p}'"))
            })
            .transpose()?;
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            HostMatch::Ip(ip)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            check_dns_name(s, suffix)?;
            HostMatch::Suffix(suffix.to_ascii_lowercase())
        } else {
            check_dns_name(s, host)?;
            HostMatch::Exact(host.to_ascii_lowercase())
        };
        Ok(Self {
            host,
            port,
            trace: false,
        })
    }
}

fn check_dns_name(entry: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("outbound host '{entry}' is not a valid host name"))
    }
}

impl HostPattern {
    /// This grant, with requests to it carrying the trace context or not.
    pub fn traced(self, trace: bool) -> Self {
        Self { trace, ..self }
    }

    /// Whether a request to `host:port` fits this grant.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if !self.port_matches(port) {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match &self.host {
            HostMatch::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatch::Suffix(suffix) => {
                let host = host.to_ascii_lowercase();
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }

    /// Whether this grant names the address `ip` literally, on `port`: what
    /// lets a request reach an internal address.
    pub fn names_address(&self, ip: IpAddr, port: u16) -> bool {
        matches!(self.host, HostMatch::Ip(g) if g == ip) && self.port_matches(port)
    }

    /// The host name of an entry that is not an address.
    pub fn host_name(&self) -> Option<&str> {
        match &self.host {
            HostMatch::Exact(name) | HostMatch::Suffix(name) => Some(name),
            HostMatch::Ip(_) => None,
        }
    }

    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }
}

/// Addresses a name-based grant must never reach: loopback, private,
/// link-local, shared (CGNAT), benchmarking, reserved, multicast and
/// unspecified ones (IANA's special-purpose registries), and IPv6 forms
/// that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo)
/// when the one they carry is internal, or always where it cannot be
/// read.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0 // "this network"
                || a == 100 && (b & 0xc0) == 64 // shared address space (CGNAT)
                || a == 192 && b == 0 && c == 0 // IETF protocol assignments
                || a == 198 && (b & 0xfe) == 18 // benchmarking
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |high: u16, low: u16| {
                Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            // IPv4-compatible (::a.b.c.d, deprecated) and NAT64
            // (64:ff9b::/96): the last 32 bits.
            if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified()
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            {
                return is_internal(IpAddr::V4(embedded(s[6], s[7])));
            }
            // 6to4 (2002::/16): bits 16 to 48.
            if s[0] == 0x2002 {
                return is_internal(IpAddr::V4(embedded(s[1], s[2])));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 // local-use NAT64 (64:ff9b:1::/48)
                || s[0] == 0x2001 && s[1] == 0 // Teredo: the address it reaches is hidden
                || s[0] == 0x2001 && s[1] == 0xdb8 // documentation
                || s[..4] == [0x100, 0, 0, 0] // discard-only
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_patterns() {
        let p: HostPattern = "api.example.com".parse().unwrap();
        assert!(p.matches("api.example.com", 1));
        let p: HostPattern = "127.0.0.1:9000".parse().unwrap();
        assert!(p.matches("127.0.0.1", 9000));
        assert!(!p.matches("127.0.0.1", 9001));
        let p: HostPattern = "[::1]:9000".parse().unwrap();
        assert!(p.matches("[::1]", 9000));
        assert!("https://x.com".parse::<HostPattern>().is_err());
        assert!("x.com:notaport".parse::<HostPattern>().is_err());
        assert!("bad host".parse::<HostPattern>().is_err());
        assert!("".parse::<HostPattern>().is_err());
    }

    #[test]
    fn an_address_grant_covers_its_port_only() {
        let loopback = "127.0.0.1".parse().unwrap();
        let p: HostPattern = "127.0.0.1:8851".parse().unwrap();
        assert!(p.names_address(loopback, 8851));
        assert!(!p.names_address(loopback, 8852));
        assert!(!p.names_address("127.0.0.2".parse().unwrap(), 8851));
        let any_port: HostPattern = "127.0.0.1".parse().unwrap();
        assert!(any_port.names_address(loopback, 8852));
        let name: HostPattern = "localhost".parse().unwrap();
        assert!(!name.names_address(loopback, 80));
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            // The ranges the hostile probe found open.
            "192.0.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "0.1.2.3",
            "224.0.0.1",
            "64:ff9b::7f00:1",   // NAT64 of 127.0.0.1
            "64:ff9b::a00:1",    // NAT64 of 10.0.0.1
            "64:ff9b:1::1",      // local-use NAT64
            "2002:7f00:1::1",    // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1", // 6to4 of 169.254.169.254
            "::7f00:1",          // IPv4-compatible 127.0.0.1
            "::a9fe:a9fe",       // IPv4-compatible 169.254.169.254
            "2001::1",           // Teredo
            "fec0::1",
            "ff02::1",
            "100::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "64:ff9b::5db8:d822", // NAT64 of 93.184.216.34
            "2002:5db8:d822::1",  // 6to4 of 93.184.216.34
            "198.20.0.1",
            "192.0.1.1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
