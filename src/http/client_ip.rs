//! Who the client is: the TCP peer, or behind our own reverse proxies the
//! address they recorded in `X-Forwarded-For`.

use actix_web::HttpRequest;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpAddr>);

impl TrustedProxies {
    pub fn new(proxies: Vec<IpAddr>) -> Self {
        Self(proxies.into_iter().map(|ip| ip.to_canonical()).collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let lines = req
            .headers()
            .get_all("X-Forwarded-For")
            .map(|line| line.as_bytes());
        Some(self.resolve(peer, lines))
    }

    /// Walks `X-Forwarded-For` from the nearest hop back, through our own
    /// proxies, to the first address they did not add themselves: only that
    /// one no client can forge. Every header line counts, in order (a proxy
    /// may add its own line after one the client forged). An entry that
    /// cannot be read ends the walk at the proxy that passed it on: skipping
    /// it would let a client choose its address by sending junk. Lines are
    /// split as bytes, so junk a client puts in front (even bytes that are
    /// not text) never hides the entry a proxy appended after it.
    pub fn resolve<'a>(&self, peer: IpAddr, lines: impl Iterator<Item = &'a [u8]>) -> IpAddr {
        let mut nearest = peer.to_canonical();
        if !self.trusts(nearest) {
            return nearest;
        }
        let entries: Vec<&[u8]> = lines
            .flat_map(|line| line.split(|byte| *byte == b','))
            .collect();
        for entry in entries.into_iter().rev() {
            match hop(entry) {
                Some(ip) if self.trusts(ip) => nearest = ip,
                Some(ip) => return ip,
                None => return nearest,
            }
        }
        nearest
    }
}

/// One `X-Forwarded-For` entry: an address, an IPv4 address with a port, or
/// a bracketed IPv6 address with or without one (what proxies write).
fn hop(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The key a client is counted under: its address, or for IPv6 its /64,
/// since one subscriber usually holds a whole /64 and could otherwise take
/// a fresh address (and a fresh allowance) for every request.
pub fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `proxies.resolve` for header lines given as text.
    fn resolve(proxies: &TrustedProxies, peer: IpAddr, lines: &[&str]) -> IpAddr {
        proxies.resolve(peer, lines.iter().map(|line| line.as_bytes()))
    }

    fn behind(proxies: &[&str]) -> TrustedProxies {
        TrustedProxies::new(proxies.iter().map(|p| ip(p)).collect())
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let proxies = behind(&["10.0.0.1"]);
        assert_eq!(
            resolve(&proxies, ip("203.0.113.9"), &["1.1.1.1"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            resolve(&proxies, ip("10.0.0.1"), &["1.1.1.1"]),
            ip("1.1.1.1")
        );
        assert_eq!(
            resolve(&proxies, ip("::ffff:10.0.0.1"), &["1.1.1.1"]),
            ip("1.1.1.1")
        );
        assert_eq!(resolve(&proxies, ip("10.0.0.1"), &[]), ip("10.0.0.1"));
    }

    #[test]
    fn the_nearest_hop_our_proxies_did_not_add_is_the_client() {
        let proxies = behind(&["10.0.0.1", "10.0.0.2"]);
        let peer = ip("10.0.0.1");
        assert_eq!(
            resolve(&proxies, peer, &["6.6.6.6, 198.51.100.9, 10.0.0.2"]),
            ip("198.51.100.9")
        );
        assert_eq!(
            resolve(&proxies, peer, &["6.6.6.6", "198.51.100.9"]),
            ip("198.51.100.9")
        );
        // Only our proxies: the farthest of them.
        assert_eq!(resolve(&proxies, peer, &["10.0.0.2"]), ip("10.0.0.2"));
    }

    #[test]
    fn ports_and_brackets_are_read() {
        let proxies = behind(&["10.0.0.1"]);
        let peer = ip("10.0.0.1");
        for (entry, client) in [
            ("6.6.6.6, 198.51.100.9:40123", "198.51.100.9"),
            ("6.6.6.6, [2001:db8::7]:443", "2001:db8::7"),
            ("6.6.6.6, [2001:db8::7]", "2001:db8::7"),
            ("6.6.6.6,2001:db8::7", "2001:db8::7"),
        ] {
            assert_eq!(resolve(&proxies, peer, &[entry]), ip(client), "{entry}");
        }
    }

    #[test]
    fn an_unreadable_entry_ends_the_walk_at_the_proxy_that_passed_it_on() {
        let proxies = behind(&["10.0.0.1", "10.0.0.2"]);
        let peer = ip("10.0.0.1");
        for junk in ["unknown", "", "_hidden", "1.2.3.4.5", "[::1"] {
            let line = format!("6.6.6.6, {junk}");
            assert_eq!(resolve(&proxies, peer, &[line.as_str()]), peer, "{junk:?}");
            let line = format!("6.6.6.6, {junk}, 10.0.0.2");
            assert_eq!(
                resolve(&proxies, peer, &[line.as_str()]),
                ip("10.0.0.2"),
                "{junk:?}"
            );
        }
        // Bytes that are not text are junk too, but only that entry: the
        // address the proxy appended after it on the same line still counts.
        let lines: [&[u8]; 1] = [b"\xff\xfe, 198.51.100.4"];
        assert_eq!(proxies.resolve(peer, lines.into_iter()), ip("198.51.100.4"));
        let lines: [&[u8]; 1] = [b"198.51.100.4, \xff"];
        assert_eq!(proxies.resolve(peer, lines.into_iter()), peer);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        assert_eq!(counted_as(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            counted_as(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(counted_as(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(counted_as(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(counted_as(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
    }
}
