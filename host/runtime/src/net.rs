//! The HTTP clients plugins' requests go through, and the egress rule that
//! keeps plugins off private networks.
//!
//! A granted host name could resolve to 127.0.0.1 or 169.254.169.254 (DNS
//! rebinding); the public-only client's resolver drops such addresses, so
//! the check applies to the address actually dialled, not just the name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Two clients: one that refuses private addresses, for plugins without
/// the `private-networks` grant, and one that allows them. Neither keeps
/// cookies (each instance has its own jar) or follows redirects (the
/// plugin decides, and the allow-list is checked again for the new URL).
#[derive(Clone)]
pub(crate) struct HttpClients {
    public_only: reqwest::Client,
    any: reqwest::Client,
}

impl HttpClients {
    /// Builds both clients.
    pub(crate) fn new() -> anyhow::Result<Self> {
        // reqwest is built without a TLS crypto provider; an embedder that
        // installed one keeps it, any other gets ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(std::time::Duration::from_secs(10))
                .pool_idle_timeout(std::time::Duration::from_secs(60))
                // Only the operator's environment should decide proxies,
                // and plugins get none of it.
                .no_proxy()
        };
        Ok(Self {
            public_only: builder()
                .dns_resolver(Arc::new(PublicOnlyResolver))
                .build()?,
            any: builder().build()?,
        })
    }

    /// The client for a plugin with or without the private-networks grant.
    pub(crate) fn client(&self, private_networks: bool) -> &reqwest::Client {
        if private_networks {
            &self.any
        } else {
            &self.public_only
        }
    }
}

/// Whether `ip` is not a globally reachable address: loopback, private,
/// link-local, shared, benchmarking, reserved, documentation and the other
/// special-purpose ranges of the IANA registries (classified by
/// `ip_network`).
///
/// IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:0:0/96`,
/// IPv4-compatible `::/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`,
/// 6to4 `2002::/16`) are judged by the IPv4 address they lead to: a NAT64
/// gateway or a 6to4 relay would otherwise carry a request to
/// `127.0.0.1`.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        // Multicast is no place for a TCP connection, whatever its scope.
        IpAddr::V4(v4) => v4.is_multicast() || !ip_network::Ipv4Network::from(v4).is_global(),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_private(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            // Deprecated site-local (fec0::/10), which the crate's global
            // test does not cover.
            let site_local = segments[0] & 0xffc0 == 0xfec0;
            site_local || !ip_network::Ipv6Network::from(v6).is_global()
        }
    }
}

/// The IPv4 address an IPv6 address stands for, in the forms that
/// translate or tunnel to IPv4.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped and IPv4-compatible (`::a.b.c.d`, but not `::` or
        // `::1`, which are IPv6's own unspecified and loopback).
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail()),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail()),
        // NAT64, well-known and local-use prefixes.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => Some(tail()),
        // 6to4: the IPv4 address follows the prefix.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                let message = format!(
                    "{host} resolves only to private addresses, which this plugin may not reach"
                );
                return Err(message.into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_purpose_range_counts_as_private() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fec0::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "2001:db8::1",
            // IPv4 reached through IPv6 forms:
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
        ] {
            // Each of these leads somewhere a plugin must not reach
            // without the private-networks grant.
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn public_addresses_including_translated_ones_are_not_private() {
        for ip in [
            "1.1.1.1",
            "52.113.194.132",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
