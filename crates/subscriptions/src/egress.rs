//! Where rest-hook notifications may go: server-side request forgery protection.
//!
//! A Subscription's endpoint is chosen by the client that writes it, and the server then sends
//! requests there from inside the operator's network. So by default no notification reaches
//! an address that is not globally routable: loopback, private (RFC 1918, unique local),
//! link-local (including cloud metadata services at 169.254.169.254), unspecified, carrier-grade
//! NAT, multicast, broadcast, documentation, benchmarking and reserved ranges, and IPv6 forms
//! that embed such an IPv4 address (IPv4-mapped, NAT64, 6to4). An operator allows exceptions
//! with [`AllowedNetwork`]s (`[subscriptions] allow_private_endpoints` in the configuration file).
//!
//! The check that matters is made on the address actually connected to: names are resolved
//! by [`GuardedResolver`], which drops forbidden addresses before the HTTP client sees them,
//! so a name that resolves differently later (DNS rebinding) is checked again on every
//! connection. Address literals never reach a resolver (the HTTP client connects to them
//! directly), so [`EgressPolicy::check_url`] is applied to every request URL. The write-time
//! check of the endpoint ([`EgressPolicy::literal_refusal`]) only refuses early what is plainly
//! forbidden, with a clear reason for the client.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// An exception to the default refusal of non-public addresses: a network (CIDR) and,
/// optionally, the one port allowed on it.
///
/// Written `ADDRESS[/PREFIX][:PORT]`, with an IPv6 network in brackets when a port follows:
/// `10.1.2.0/24`, `127.0.0.1:9000`, `fd00::/8`, `[::1]:9000`, `[fd00:1::/64]:443`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedNetwork {
    net: IpNet,
    port: Option<u16>,
}

impl AllowedNetwork {
    /// Whether this entry allows `ip` on `port`.
    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        self.net.contains(&ip.to_canonical()) && self.port.is_none_or(|p| p == port)
    }
}

impl FromStr for AllowedNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = |why: &str| {
            format!(
                "{text:?} is not ADDRESS[/PREFIX][:PORT] (e.g. 10.1.2.0/24, 127.0.0.1:9000, [::1]:9000): {why}"
            )
        };
        let (net, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("only :PORT may follow ]"))?,
                ),
            };
            (inside, port)
        } else if text.matches(':').count() > 1 {
            // An IPv6 network without a port.
            (text, None)
        } else {
            match text.split_once(':') {
                Some((net, port)) => (net, Some(port)),
                None => (text, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))
            })
            .transpose()?;
        let net = if net.contains('/') {
            IpNet::from_str(net).map_err(|e| bad(&e.to_string()))?
        } else {
            IpNet::from(IpAddr::from_str(net).map_err(|e| bad(&e.to_string()))?)
        };
        // IPv4-mapped IPv6 networks are written as IPv4: addresses are compared canonically.
        let net = match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
                    .map_err(|e| bad(&e.to_string()))?,
                None => net,
            },
            other => other,
        };
        Ok(Self {
            net: net.trunc(),
            port,
        })
    }
}

impl fmt::Display for AllowedNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.net) {
            (None, net) => write!(f, "{net}"),
            (Some(port), IpNet::V4(net)) => write!(f, "{net}:{port}"),
            (Some(port), IpNet::V6(net)) => write!(f, "[{net}]:{port}"),
        }
    }
}

/// Why an address is not globally routable, or `None` when it is.
///
/// IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:0:0/96`, the NAT64
/// well-known prefix `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that IPv4 address, since
/// that is where a packet to them ends up.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified (\"this network\")")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (b & 0xc0) == 64 {
        Some("carrier-grade NAT (shared)")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignment")
    } else if ip.is_documentation() {
        Some("documentation")
    } else if a == 198 && (b & 0xfe) == 18 {
        Some("benchmarking")
    } else if a == 192 && b == 88 && c == 99 {
        Some("6to4 relay anycast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    // NAT64 well-known prefix (RFC 6052): the last 32 bits are the IPv4 destination.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, high, low] = segments;
        return special_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    // 6to4 (RFC 3056): bits 16..48 are the IPv4 address of the tunnel end.
    if segments[0] == 0x2002 {
        return special_v4(Ipv4Addr::from(
            (u32::from(segments[1]) << 16) | u32::from(segments[2]),
        ));
    }
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_unique_local() {
        Some("unique local (private)")
    } else if ip.is_unicast_link_local() {
        Some("link-local")
    } else if (segments[0] & 0xffc0) == 0xfec0 {
        Some("site-local")
    } else if segments[..6] == [0, 0, 0, 0, 0, 0] {
        Some("IPv4-compatible (deprecated)")
    } else if segments[..3] == [0x64, 0xff9b, 1] {
        Some("NAT64 local use")
    } else if segments[..4] == [0x100, 0, 0, 0] {
        Some("discard-only")
    } else if (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || (segments[0] == 0x3fff && segments[1] < 0x1000)
    {
        Some("documentation")
    } else if segments[0] == 0x2001 && segments[1] < 0x200 {
        // 2001::/23: Teredo, benchmarking, ORCHID and other IETF protocol assignments.
        Some("IETF protocol assignment")
    } else if segments[0] == 0x5f00 {
        Some("SRv6 segment identifier")
    } else if (segments[0] & 0xe000) != 0x2000 {
        // Outside 2000::/3, the only global unicast space allocated.
        Some("reserved")
    } else {
        None
    }
}

/// Where rest-hooks may connect: every globally routable address, plus the operator's
/// exceptions.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allowed: Vec<AllowedNetwork>,
}

/// A refused destination. Its text is for the server's log; subscribers are only told that
/// the endpoint could not be reached, as for any connection failure, so that refusals and
/// closed, filtered or open ports all look alike to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl EgressPolicy {
    /// A policy with these exceptions.
    pub fn new(allowed: Vec<AllowedNetwork>) -> Self {
        Self { allowed }
    }

    /// Whether a connection to `ip` on `port` is allowed.
    pub fn permits(&self, ip: IpAddr, port: u16) -> bool {
        special_purpose(ip.to_canonical()).is_none()
            || self.allowed.iter().any(|a| a.allows(ip, port))
    }

    /// Checks a request URL whose host is an address literal (the HTTP client connects to
    /// those without resolving, so the resolver never sees them). Names pass: they are checked
    /// on resolution.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let port = url.port_or_known_default().unwrap_or(0);
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(Refused(format!("{url} has no host"))),
        };
        if self.permits(ip, port) {
            Ok(())
        } else {
            Err(Refused(format!(
                "{ip} port {port} is a {} address, not allowed for rest-hooks",
                special_purpose(ip.to_canonical()).unwrap_or("forbidden")
            )))
        }
    }

    /// The reason to refuse `url` as an endpoint when it is written, if it is plainly
    /// forbidden: an address literal of a forbidden range, or `localhost` (RFC 6761), unless
    /// an exception allows it. Other names are judged when they are resolved.
    pub fn literal_refusal(&self, url: &Url) -> Option<String> {
        let port = url.port_or_known_default().unwrap_or(0);
        let candidates: Vec<IpAddr> = match url.host()? {
            url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    vec![
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ]
                } else {
                    return None;
                }
            }
        };
        if candidates.iter().any(|ip| self.permits(*ip, port)) {
            return None;
        }
        let kind = special_purpose(candidates[0].to_canonical()).unwrap_or("forbidden");
        Some(format!(
            "channel.endpoint {:?} is a {kind} address: rest-hooks may only reach public addresses unless the server's operator allows others ([subscriptions] allow_private_endpoints)",
            url.as_str()
        ))
    }
}

/// A DNS resolver for the rest-hook client that returns only the addresses `policy` permits
/// on `port` (the port every request of this client goes to), so the check is made on the
/// address the connection actually uses, at every connection.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    port: u16,
}

impl GuardedResolver {
    /// A resolver for connections to `port`.
    pub fn new(policy: Arc<EgressPolicy>, port: u16) -> Self {
        Self { policy, port }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let port = self.port;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let permitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip(), port))
                .collect();
            if permitted.is_empty() {
                let refused: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused(format!(
                    "{host} resolves only to addresses not allowed for rest-hooks ({})",
                    refused.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// An HTTP client for requests to `port` that connects only where `policy` permits: names
/// are resolved through a [`GuardedResolver`], no proxy is used (a proxy would resolve names
/// itself, out of the resolver's sight) and no redirect is followed (it could lead anywhere).
/// Address literals in request URLs must still be checked with [`EgressPolicy::check_url`].
pub fn client(
    policy: Arc<EgressPolicy>,
    port: u16,
    timeout: std::time::Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver::new(policy, port)))
        .user_agent("phip-subscriptions")
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn non_public_ranges_are_recognised() {
        for forbidden in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",
            "2001:2::1",
            "5f00::1",
            "4000::1",
        ] {
            assert!(
                special_purpose(ip(forbidden)).is_some(),
                "{forbidden} must be refused"
            );
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700::1111",
            "2400:3200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(special_purpose(ip(public)), None, "{public} is public");
        }
    }

    #[test]
    fn allowed_networks_parse_with_optional_ports() {
        let cases = [
            ("10.1.2.0/24", "10.1.2.0/24"),
            ("10.1.2.7/24", "10.1.2.0/24"),
            ("127.0.0.1:9000", "127.0.0.1/32:9000"),
            ("10.0.0.0/8:443", "10.0.0.0/8:443"),
            ("fd00::/8", "fd00::/8"),
            ("::1", "::1/128"),
            ("[::1]:9000", "[::1/128]:9000"),
            ("[fd00:1::/64]:443", "[fd00:1::/64]:443"),
            ("::ffff:127.0.0.1", "127.0.0.1/32"),
        ];
        for (text, shown) in cases {
            let parsed: AllowedNetwork = text.parse().expect(text);
            assert_eq!(parsed.to_string(), shown, "{text}");
        }
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "127.0.0.1:http",
            "127.0.0.1:70000",
            "[::1",
            "[::1]9000",
        ] {
            assert!(bad.parse::<AllowedNetwork>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exceptions_allow_exactly_their_network_and_port() {
        let policy = EgressPolicy::new(vec![
            "127.0.0.1:9000".parse().expect("rule"),
            "10.1.2.0/24".parse().expect("rule"),
        ]);
        assert!(policy.permits(ip("127.0.0.1"), 9000));
        assert!(
            policy.permits(ip("::ffff:127.0.0.1"), 9000),
            "mapped form too"
        );
        assert!(!policy.permits(ip("127.0.0.1"), 9001));
        assert!(!policy.permits(ip("127.0.0.2"), 9000));
        assert!(!policy.permits(ip("::1"), 9000));
        assert!(policy.permits(ip("10.1.2.200"), 80));
        assert!(!policy.permits(ip("10.1.3.1"), 80));
        assert!(policy.permits(ip("93.184.216.34"), 443));
    }

    #[test]
    fn every_spelling_of_loopback_is_refused_at_write_time() {
        let policy = EgressPolicy::default();
        for endpoint in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://2130706433/hook",
            "http://0x7f000001/hook",
            "http://127.1/hook",
            "http://0177.0.0.1/hook",
            "http://localhost:8080/hook",
            "http://LOCALHOST./hook",
            "http://api.localhost/hook",
            "http://0.0.0.0/hook",
            "http://0/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://[::ffff:7f00:1]/hook",
            "http://[64:ff9b::7f00:1]/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/hook",
        ] {
            let url = Url::parse(endpoint).expect(endpoint);
            assert!(
                policy.literal_refusal(&url).is_some(),
                "{endpoint} must be refused"
            );
            if !endpoint.contains("localhost") && !endpoint.contains("LOCALHOST") {
                assert!(
                    policy.check_url(&url).is_err(),
                    "{endpoint} at connect time"
                );
            }
        }
        let public = Url::parse("https://hooks.example.org/in").expect("url");
        assert_eq!(policy.literal_refusal(&public), None);
        assert_eq!(policy.check_url(&public), Ok(()));
        let allowed = EgressPolicy::new(vec!["127.0.0.1:9000".parse().expect("rule")]);
        for endpoint in ["http://127.0.0.1:9000/hook", "http://localhost:9000/hook"] {
            let url = Url::parse(endpoint).expect(endpoint);
            assert_eq!(allowed.literal_refusal(&url), None, "{endpoint}");
        }
        let other_port = Url::parse("http://127.0.0.1:9001/hook").expect("url");
        assert!(allowed.literal_refusal(&other_port).is_some());
        assert!(allowed.check_url(&other_port).is_err());
    }

    /// A listener on loopback counting the connections it accepts, answering each with 200.
    async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    let _ = stream.read(&mut buffer).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn the_client_never_connects_to_a_name_that_resolves_to_loopback() {
        let (port, accepted) = counting_listener().await;
        let url = format!("http://localhost:{port}/hook");
        let timeout = std::time::Duration::from_secs(5);
        let guarded = client(Arc::new(EgressPolicy::default()), port, timeout).expect("client");
        let error = guarded
            .post(&url)
            .send()
            .await
            .expect_err("localhost is loopback");
        assert!(error.is_connect() || error.is_request(), "{error}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The same client with the loopback port allowed reaches the listener, so the refusal
        // above was the policy's.
        let allowing = EgressPolicy::new(vec![format!("127.0.0.1:{port}").parse().expect("rule")]);
        let allowed = client(Arc::new(allowing), port, timeout).expect("client");
        let response = allowed.post(&url).send().await.expect("allowed");
        assert!(response.status().is_success());
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_resolver_drops_forbidden_addresses() {
        let refused = GuardedResolver::new(Arc::new(EgressPolicy::default()), 80)
            .resolve("localhost".parse().expect("name"))
            .await;
        let error = refused.err().expect("localhost resolves only to loopback");
        assert!(error.is::<Refused>(), "{error}");
        let allowed = GuardedResolver::new(
            Arc::new(EgressPolicy::new(vec!["127.0.0.0/8:80"
                .parse()
                .expect("rule")])),
            80,
        )
        .resolve("localhost".parse().expect("name"))
        .await
        .expect("allowed by the exception");
        let addresses: Vec<SocketAddr> = allowed.collect();
        assert!(
            !addresses.is_empty()
                && addresses
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.ip().is_ipv4()),
            "{addresses:?}"
        );
    }
}
