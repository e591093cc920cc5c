//! Outgoing HTTP for tools: `wasi:http` requests checked against the tool's host allow-list.
//!
//! Every request is checked — and a redirect is a new request the guest makes, so every hop is
//! checked too. The host name is resolved here, every resolved address is checked, and the
//! connection goes to the checked address, so a DNS answer cannot change between the check and
//! the connect. Loopback, private, link-local (cloud metadata at 169.254.169.254), ULA, CGNAT,
//! multicast and unspecified addresses are refused unless the grant names that IP literally.
//! Guests get no sockets and no DNS of their own (the WASI context grants none).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One allowed destination: a host, and optionally the only scheme and port allowed.
/// Without a port only the scheme's default port (80, 443) is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGrant {
    scheme: Option<Scheme>,
    host: String,
    port: Option<u16>,
}

impl HostGrant {
    /// Parses `host`, `host:port`, `scheme://host` or `scheme://host:port` (IPv6 in brackets).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = match text.split_once("://") {
            Some(("http", rest)) => (Some(Scheme::HTTP), rest),
            Some(("https", rest)) => (Some(Scheme::HTTPS), rest),
            Some((other, _)) => return Err(format!("`{text}`: only http and https are allowed, not `{other}`")),
            None => (None, text),
        };
        if rest.contains(['/', '@', '?', '#']) {
            return Err(format!("`{text}`: give a host only, without a path or credentials"));
        }
        let authority: http::uri::Authority = rest
            .parse()
            .ok()
            .filter(|a: &http::uri::Authority| !a.host().is_empty())
            .ok_or_else(|| format!("`{text}` is not a host, host:port or scheme://host:port"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        Ok(HostGrant { scheme, host, port: authority.port_u16() })
    }

    fn allows(&self, scheme: &Scheme, host: &str, port: u16) -> bool {
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        self.host == host
            && self.scheme.as_ref().is_none_or(|s| s == scheme)
            && self.port.unwrap_or(default_port) == port
    }

    /// A grant that names an IP literally may reach it even when it is private.
    fn names_ip(&self, ip: IpAddr) -> bool {
        self.host.parse::<IpAddr>().is_ok_and(|granted| granted == ip)
    }
}

impl fmt::Display for HostGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        match self.host.contains(':') {
            true => write!(f, "[{}]", self.host)?,
            false => f.write_str(&self.host)?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// The `wasi:http` hooks of one call: the grants, and what was refused (reported as `denied`).
pub(crate) struct HttpPolicy {
    grants: Arc<[HostGrant]>,
    pub(crate) refusals: Arc<Mutex<Vec<String>>>,
}

impl HttpPolicy {
    pub(crate) fn new(grants: Arc<[HostGrant]>) -> Self {
        HttpPolicy { grants, refusals: Arc::default() }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

type SendResult = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>), HttpError>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let grants = self.grants.clone();
        let refusals = self.refusals.clone();
        Box::new(async move {
            let addresses = match check(&grants, request.uri()).await {
                Ok(addresses) => addresses,
                Err(reason) => {
                    if let Ok(mut refusals) = refusals.lock() {
                        refusals.push(reason);
                    }
                    return Err(HttpError::HttpRequestDenied);
                }
            };
            send(request, &addresses, options).await
        })
    }
}

/// Checks `url` against `grants` as a tool's request would be checked (the host allowed, every
/// address it resolves to allowed): the addresses to connect to, or why not. For the host's
/// other outgoing requests that the agent file's rules govern (webhooks).
pub async fn allowed_addresses(grants: &[HostGrant], url: &str) -> Result<Vec<SocketAddr>, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    if uri.scheme().is_none() {
        return Err(format!("`{url}`: give the scheme, http:// or https://"));
    }
    check(grants, &uri).await
}

/// Checks a request's destination and returns the addresses it may connect to.
async fn check(grants: &[HostGrant], uri: &http::Uri) -> Result<Vec<SocketAddr>, String> {
    let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTPS);
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!("{uri}: only http and https are allowed"));
    }
    let Some(authority) = uri.authority() else { return Err(format!("{uri}: the URL has no host")) };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
    let Some(grant) = grants.iter().find(|g| g.allows(&scheme, &host, port)) else {
        let allowed: Vec<String> = grants.iter().map(ToString::to_string).collect();
        return Err(match allowed.is_empty() {
            true => format!("{scheme}://{host}:{port} is not allowed: this tool has no network grant"),
            false => format!("{scheme}://{host}:{port} is not allowed (allowed: {})", allowed.join(", ")),
        });
    };
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    for address in &addresses {
        let ip = canonical(address.ip());
        if let Some(kind) = restricted_kind(ip)
            && !grant.names_ip(ip)
        {
            return Err(format!(
                "{host} resolves to {ip}, a {kind} address: refused (grant the IP itself to allow it)"
            ));
        }
    }
    Ok(addresses)
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is off limits by default, if it is.
pub fn restricted_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique local (ULA)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// Sends `request` over a connection to one of the checked `addresses` (never a fresh lookup).
async fn send(
    mut request: http::Request<WasiBody>,
    addresses: &[SocketAddr],
    options: Option<RequestOptions>,
) -> SendResult {
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(CONNECT_TIMEOUT);
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(FIRST_BYTE_TIMEOUT);
    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addresses))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;

    let use_tls = request.uri().scheme() == Some(&Scheme::HTTPS);
    let host = request.uri().host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    // The request line carries only the path: scheme and host are for proxies.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let response = if use_tls {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host).map_err(HttpError::InvalidDnsNameError)?;
        let tls =
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(HttpError::Tls)?;
        exchange(TokioIo::new(tls), request, first_byte_timeout).await?
    } else {
        exchange(TokioIo::new(tcp), request, first_byte_timeout).await?
    };
    let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
    Ok((response, Box::new(async { Ok(()) })))
}

async fn exchange<IO>(
    io: IO,
    request: http::Request<WasiBody>,
    first_byte_timeout: Duration,
) -> Result<http::Response<hyper::body::Incoming>, HttpError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    // The connection is driven on its own task and ends when the response body is dropped.
    tokio::spawn(connection);
    tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_match() {
        let grant = HostGrant::parse("https://API.example.com").unwrap();
        assert!(grant.allows(&Scheme::HTTPS, "api.example.com", 443));
        assert!(!grant.allows(&Scheme::HTTP, "api.example.com", 80));
        assert!(!grant.allows(&Scheme::HTTPS, "api.example.com", 8443), "only the default port");
        assert!(!grant.allows(&Scheme::HTTPS, "evil.api.example.com", 443));
        let grant = HostGrant::parse("127.0.0.1:8080").unwrap();
        assert!(grant.allows(&Scheme::HTTP, "127.0.0.1", 8080));
        assert!(grant.names_ip("127.0.0.1".parse().unwrap()));
        assert_eq!(HostGrant::parse("http://[::1]:9").unwrap().to_string(), "http://[::1]:9");
        assert!(HostGrant::parse("ftp://x").is_err());
        assert!(HostGrant::parse("x.com/path").is_err());
        assert!(HostGrant::parse("user@x.com").is_err());
    }

    #[test]
    fn restricted_addresses() {
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1"] {
            assert!(restricted_kind(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["::1", "::", "fd00::1", "fe80::1", "ff02::1"] {
            assert!(restricted_kind(ip.parse().unwrap()).is_some(), "{ip}");
        }
        assert_eq!(restricted_kind(canonical("::ffff:127.0.0.1".parse().unwrap())), Some("loopback"));
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert_eq!(restricted_kind(ip.parse().unwrap()), None, "{ip}");
        }
    }
}
