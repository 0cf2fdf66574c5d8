//! The HTTP clients plugins' requests go through, and the egress rule that
//! keeps plugins off private networks.
//!
//! A granted host name could resolve to 127.0.0.1 or 169.254.169.254 (DNS
//! rebinding); the public-only client's resolver drops such addresses, so
//! the check applies to the address actually dialled, not just the name.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Two clients: one that refuses private addresses, for plugins without
/// the `private-networks` grant, and one that allows them. Neither keeps
/// cookies (each instance has its own jar) or follows redirects (the
/// plugin decides, and the allow-list is checked again for the new URL).
#[derive(Clone)]
pub struct HttpClients {
    public_only: reqwest::Client,
    any: reqwest::Client,
}

impl HttpClients {
    /// Builds both clients.
    pub fn new() -> anyhow::Result<Self> {
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
    pub fn client(&self, private_networks: bool) -> &reqwest::Client {
        if private_networks {
            &self.any
        } else {
            &self.public_only
        }
    }
}

/// Whether `ip` is on a loopback, private, link-local or otherwise
/// non-public network.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // 100.64.0.0/10, carrier-grade NAT
                || (a == 100 && (64..128).contains(&b))
                // 0.0.0.0/8
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
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
    fn loopback_private_and_metadata_addresses_are_private() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700:4700::1111", "52.113.194.132"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
