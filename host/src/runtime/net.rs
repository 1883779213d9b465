//! Outbound HTTP for plugins: the manifest's allow-list, enforced after DNS.
//!
//! Every request a plugin makes through `wasi:http` comes here. The host
//! checks the origin (scheme, host and port) against the grants, resolves the
//! name itself, refuses special-purpose addresses (loopback, private,
//! link-local, cloud metadata) unless the grant names that exact address, and
//! then connects to the address it checked, so a DNS answer cannot change
//! between the check and the connect. Redirects are not followed here: each
//! hop is a new request from the plugin and is checked again. Credentials the
//! manifest binds to an origin are attached here, out of the plugin's reach.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::oauth::{Flow, TokenCache};
use super::redact::Redactor;
use crate::manifest::Origin;

/// One outbound request, as the step log records it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Full URL, with secret values masked.
    pub url: String,
    /// Response status, when a response arrived.
    pub status: Option<u16>,
    /// Why no response arrived: refused by policy, connect failure, ...
    pub error: Option<String>,
    /// From the request leaving the plugin to the response headers.
    pub duration_ms: u64,
    /// Made by the host for the plugin (a credential's token request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_host: bool,
}

/// A credential resolved for one call: where it goes and what header it sets.
#[derive(Clone)]
pub(crate) struct AttachedCredential {
    pub origin: Origin,
    pub header: HeaderName,
    pub value: Attach,
}

/// What a credential puts in its header.
#[derive(Clone)]
pub(crate) enum Attach {
    /// A fixed value (bearer, basic, API key).
    Static(HeaderValue),
    /// `Bearer <token>` from a token flow the host runs.
    Flow(Flow),
}

/// What one call may reach. Cheap to clone into each request's future.
#[derive(Clone)]
pub(crate) struct NetPolicy {
    inner: Arc<PolicyInner>,
}

struct PolicyInner {
    tokens: Arc<TokenCache>,
    allowed: Vec<Origin>,
    credentials: Vec<AttachedCredential>,
    journal: Arc<Mutex<Vec<RequestRecord>>>,
    redactor: Arc<Redactor>,
    connect_timeout: Duration,
}

/// Requests one call may make; a plugin looping on requests is stopped here.
const MAX_REQUESTS_PER_CALL: usize = 1000;

impl NetPolicy {
    pub fn new(
        allowed: Vec<Origin>,
        credentials: Vec<AttachedCredential>,
        journal: Arc<Mutex<Vec<RequestRecord>>>,
        redactor: Arc<Redactor>,
        tokens: Arc<TokenCache>,
    ) -> Self {
        Self {
            inner: Arc::new(PolicyInner {
                tokens,
                allowed,
                credentials,
                journal,
                redactor,
                connect_timeout: Duration::from_secs(10),
            }),
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for NetPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>
    {
        let inner = self.inner.clone();
        Box::new(async move { inner.send(request).await })
    }
}

impl PolicyInner {
    async fn send(
        &self,
        mut request: http::Request<WasiBody>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
        let started = Instant::now();
        let method = request.method().to_string();
        let url = self.redactor.redact(&request.uri().to_string());
        let record = |status: Option<u16>, error: Option<String>| {
            let mut journal = self.journal.lock().expect("journal lock");
            journal.push(RequestRecord {
                method: method.clone(),
                url: url.clone(),
                status,
                error: error.map(|e| self.redactor.redact(&e)),
                duration_ms: started.elapsed().as_millis() as u64,
                by_host: false,
            });
        };
        if self.journal.lock().expect("journal lock").len() >= MAX_REQUESTS_PER_CALL {
            return Err(HttpError::ConnectionLimitReached);
        }
        let (origin, addrs) = match self.check(request.uri()).await {
            Ok(ok) => ok,
            Err(Refusal { reason, code }) => {
                tracing::warn!(%url, %reason, "outbound request refused");
                record(None, Some(format!("refused: {reason}")));
                return Err(code);
            }
        };
        let mut flows = Vec::new();
        for cred in self.credentials.iter().filter(|c| c.origin == origin) {
            let value = match &cred.value {
                Attach::Static(v) => v.clone(),
                Attach::Flow(flow) => match self.flow_header(flow).await {
                    Ok(v) => {
                        flows.push(flow);
                        v
                    }
                    Err(e) => {
                        record(None, Some(format!("credential: {e}")));
                        return Err(HttpError::InternalError(Some(self.redactor.redact(&e))));
                    }
                },
            };
            request.headers_mut().insert(cred.header.clone(), value);
        }
        match self.exchange(&origin, &addrs, request).await {
            Ok((response, io)) => {
                if response.status() == http::StatusCode::UNAUTHORIZED {
                    // A revoked or expired token: the next request fetches anew.
                    for flow in flows {
                        self.tokens.invalidate(flow).await;
                    }
                }
                record(Some(response.status().as_u16()), None);
                Ok((response, io))
            }
            Err(e) => {
                record(None, Some(describe(&e)));
                Err(e)
            }
        }
    }

    /// `Bearer <token>` for a flow, fetching the token if none is cached.
    async fn flow_header(&self, flow: &Flow) -> Result<HeaderValue, String> {
        let (token, fetched) = self.tokens.token(flow).await;
        if let Some(mut r) = fetched {
            r.error = r.error.map(|e| self.redactor.redact(&e));
            self.journal.lock().expect("journal lock").push(r);
        }
        let token = token?;
        self.redactor.add(&token);
        let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token endpoint returned a token unfit for a header".to_string())?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// Decide whether a URL may be reached, and at which addresses.
    async fn check(&self, uri: &http::Uri) -> Result<(Origin, Vec<SocketAddr>), Refusal> {
        let denied = |reason: String| Refusal {
            reason,
            code: HttpError::HttpRequestDenied,
        };
        let url = url::Url::parse(&uri.to_string()).map_err(|e| denied(format!("bad URL: {e}")))?;
        let origin = Origin::of_url(&url).map_err(denied)?;
        if !self.allowed.contains(&origin) {
            return Err(denied(format!(
                "{origin} is not in the manifest's allowed_hosts"
            )));
        }
        if let Some(ip) = origin.ip() {
            // Named as an address in the grant: the grant is the permission.
            return Ok((origin.clone(), vec![SocketAddr::new(ip, origin.port)]));
        }
        let lookup = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::lookup_host((origin.host.as_str(), origin.port)),
        )
        .await
        .map_err(|_| Refusal {
            reason: format!("DNS lookup of {} timed out", origin.host),
            code: HttpError::DnsTimeout,
        })?
        .map_err(|e| Refusal {
            reason: format!("DNS lookup of {} failed: {e}", origin.host),
            code: HttpError::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            },
        })?;
        let addrs: Vec<SocketAddr> = lookup.collect();
        if addrs.is_empty() {
            return Err(Refusal {
                reason: format!("{} has no addresses", origin.host),
                code: HttpError::DestinationNotFound,
            });
        }
        for addr in &addrs {
            if let Some(kind) = special_purpose(addr.ip()) {
                return Err(Refusal {
                    reason: format!(
                        "{} resolved to {} ({kind}); only an allowed_hosts entry naming that address may reach it",
                        origin.host,
                        addr.ip()
                    ),
                    code: HttpError::DestinationIpProhibited,
                });
            }
        }
        Ok((origin, addrs))
    }

    /// Connect to a checked address and send one HTTP/1.1 request.
    async fn exchange(
        &self,
        origin: &Origin,
        addrs: &[SocketAddr],
        mut request: http::Request<WasiBody>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
        let mut last_err = HttpError::ConnectionRefused;
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last_err = HttpError::Connect(e),
                Err(_) => last_err = HttpError::ConnectionTimeout,
            }
        }
        let stream = stream.ok_or(last_err)?;
        let io: Box<dyn AsyncStream> = if origin.scheme == "https" {
            let name = match origin.ip() {
                Some(ip) => rustls::pki_types::ServerName::from(ip),
                None => rustls::pki_types::ServerName::try_from(origin.host.clone())
                    .map_err(HttpError::InvalidDnsNameError)?,
            };
            let tls = tokio_rustls::TlsConnector::from(tls_config())
                .connect(name, stream)
                .await
                .map_err(HttpError::Tls)?;
            Box::new(tls)
        } else {
            Box::new(stream)
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        // HTTP/1.1 wants origin-form on the wire; Host is already set by wasi-http.
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let mut conn = Some(Box::pin(conn));
        let mut send = Box::pin(sender.send_request(request));
        // Drive the connection while waiting for the response headers.
        let response = std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(r) = send.as_mut().poll(cx) {
                return std::task::Poll::Ready(r.map_err(HttpError::from));
            }
            if let Some(c) = conn.as_mut()
                && let std::task::Poll::Ready(r) = c.as_mut().poll(cx)
            {
                conn = None;
                if let Err(e) = r {
                    return std::task::Poll::Ready(Err(HttpError::from(e)));
                }
                // The connection ended first: the response (or its error) is ready.
                return send.as_mut().poll(cx).map_err(HttpError::from);
            }
            std::task::Poll::Pending
        })
        .await?;
        let io: IoFuture = Box::new(async move {
            if let Some(c) = conn {
                c.await.map_err(HttpError::from)?;
            }
            Ok(())
        });
        let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
        Ok((response, io))
    }
}

trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> AsyncStream for T {}

struct Refusal {
    reason: String,
    code: HttpError,
}

fn describe(e: &HttpError) -> String {
    match e {
        HttpError::Connect(io) => format!("connect failed: {io}"),
        HttpError::Tls(io) => format!("TLS failed: {io}"),
        HttpError::Hyper(h) => format!("HTTP error: {h}"),
        other => format!("{other:?}"),
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Why an address is not for plugins to reach by name, if it is special.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            special_v6(v6)
        }
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("cloud metadata")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if seg[0] == 0xfd00 && seg[1] == 0x0ec2 {
        Some("cloud metadata")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("private")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("reserved")
    } else if seg[0] == 0x64 && seg[1] == 0xff9b {
        // NAT64: judge the embedded IPv4 address.
        let [.., c, d] = seg;
        special_v4(Ipv4Addr::new(
            (c >> 8) as u8,
            c as u8,
            (d >> 8) as u8,
            d as u8,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_named() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("cloud metadata")),
            ("169.254.1.1", Some("link-local")),
            ("100.64.0.1", Some("shared address space")),
            ("0.0.0.0", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("fd00:ec2::254", Some("cloud metadata")),
            ("fc00::1", Some("private")),
            ("fe80::1", Some("link-local")),
            ("64:ff9b::a9fe:a9fe", Some("cloud metadata")),
            ("93.184.215.14", None),
            ("2606:4700::1111", None),
        ];
        for (ip, want) in cases {
            assert_eq!(special_purpose(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
