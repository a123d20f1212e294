//! Where an instance's own provider may connect. Instance administrators set provider URLs
//! through the API, so without a guard a tenant could point the worker at the service's own
//! network: the RabbitMQ management port, a cloud metadata endpoint, a database. An
//! instance provider therefore reaches public addresses only, checked on the addresses a
//! name resolves to when the connection is made (so a name that later resolves elsewhere
//! gains nothing), unless the operator allows private networks
//! (`MAIL_PROVIDERS_ALLOW_PRIVATE`, for providers inside the cluster and for tests).
//! The global transport is the operator's own configuration and is not checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which addresses a connection may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destinations {
    /// Any address: the global transport, or instance providers when the operator allows it.
    Any,
    /// Public unicast addresses only.
    PublicOnly,
}

impl Destinations {
    /// The addresses of `resolved` a connection may use, and an error naming the host when
    /// none is left.
    pub fn filter(self, host: &str, resolved: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
        if self == Destinations::Any {
            return Ok(resolved);
        }
        let allowed: Vec<SocketAddr> = resolved.into_iter().filter(|a| is_public(a.ip())).collect();
        if allowed.is_empty() {
            Err(format!(
                "{host} is a private, loopback or link-local address; instance providers may \
                 only reach public addresses (MAIL_PROVIDERS_ALLOW_PRIVATE=true allows them)"
            ))
        } else {
            Ok(allowed)
        }
    }
}

/// True for a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24; benchmarking, 198.18.0.0/15; reserved.
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // NAT64 with an embedded address, 64:ff9b::/96, could reach an IPv4 private one.
        || (first == 0x0064 && ip.segments()[1] == 0xff9b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_host_left_without_addresses_is_named() {
        let local: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let err = Destinations::PublicOnly
            .filter("relay.internal", vec![local])
            .unwrap_err();
        assert!(err.contains("relay.internal"), "{err}");
        assert_eq!(
            Destinations::Any.filter("x", vec![local]).unwrap(),
            vec![local]
        );
    }
}
