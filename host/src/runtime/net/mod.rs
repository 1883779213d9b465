//! Outbound HTTP for plugins: the manifest's allow-list, enforced after DNS.
//!
//! Every request a plugin makes through `wasi:http` comes here. The host
//! checks the origin (scheme, host and port) against the grants, resolves the
//! name itself, refuses special-purpose addresses (loopback, private,
//! link-local, cloud metadata) unless the grant names that exact address, and
//! then connects to the address it checked, so a DNS answer cannot change
//! between the check and the connect. Redirects are not followed here: each
//! hop is a new request from the plugin and is checked again. Credentials the
//! manifest binds to an origin are attached here, out of the plugin's reach
//! ([`credentials`]).

mod credentials;
mod journal;
mod scrub;
mod special;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

pub(crate) use self::credentials::{AttachedCredential, resolve};
pub(crate) use self::journal::Journal;
use self::scrub::{ScrubBody, Scrubber};
pub use self::special::special_purpose;
use super::limits::{InFlight, LimitNotes, RequestSlots};
use super::oauth::TokenCache;
use super::redact::Redactor;
use crate::manifest::Origin;

pub use crate::report::RequestRecord;

/// What one call may reach. Cheap to clone into each request's future.
#[derive(Clone)]
pub(crate) struct NetPolicy {
    inner: Arc<PolicyInner>,
}

struct PolicyInner {
    tokens: Arc<TokenCache>,
    allowed: Vec<Origin>,
    credentials: Vec<AttachedCredential>,
    journal: Arc<Journal>,
    redactor: Arc<Redactor>,
    slots: RequestSlots,
    notes: LimitNotes,
    /// Credential forms attached so far in this call (tokens join as they
    /// are fetched), and the scrubber built for them.
    forms: Mutex<(Vec<String>, Option<Arc<Scrubber>>)>,
    connect_timeout: Duration,
}

/// Requests one call may make; a plugin looping on requests is stopped here.
pub const MAX_REQUESTS_PER_CALL: usize = 1000;
/// Largest response header section the host reads (and so a plugin sees).
pub const MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;
/// Most response header fields the host reads.
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// What a [`NetPolicy`] is made of, for one call.
pub(crate) struct NetGrants {
    pub allowed: Vec<Origin>,
    pub credentials: Vec<AttachedCredential>,
    pub journal: Arc<Journal>,
    pub redactor: Arc<Redactor>,
    pub tokens: Arc<TokenCache>,
    pub slots: RequestSlots,
    pub notes: LimitNotes,
}

impl NetPolicy {
    pub fn new(g: NetGrants) -> Self {
        let forms = g
            .credentials
            .iter()
            .flat_map(|c| c.forms.iter().cloned())
            .collect();
        Self {
            inner: Arc::new(PolicyInner {
                tokens: g.tokens,
                allowed: g.allowed,
                credentials: g.credentials,
                journal: g.journal,
                redactor: g.redactor,
                slots: g.slots,
                notes: g.notes,
                forms: Mutex::new((forms, None)),
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
        let method = request.method().clone();
        let url = self.redactor.redact(&request.uri().to_string());
        // Refusals before anything is sent: the method, then the caps, so a
        // plugin cannot hold more connections open than its limits allow.
        let early = if method == http::Method::TRACE || method == http::Method::CONNECT {
            Some((
                format!(
                    "refused: {method} is not allowed (it would echo the request, credentials included, or open a tunnel)"
                ),
                HttpError::HttpRequestMethodInvalid,
            ))
        } else if self.journal.made() >= MAX_REQUESTS_PER_CALL {
            let limit = format!("at most {MAX_REQUESTS_PER_CALL} requests per call");
            self.notes.hit(&limit);
            Some((
                format!("refused: {limit}"),
                HttpError::ConnectionLimitReached,
            ))
        } else {
            None
        };
        let entry = self.journal.begin(method.as_str(), &url);
        if let Some((reason, code)) = early {
            tracing::warn!(%url, %reason, "outbound request refused");
            self.journal.finish(entry, None, Some(reason));
            return Err(code);
        }
        let in_flight = match self.slots.acquire() {
            Ok(slot) => Arc::new(slot),
            Err(limit) => {
                self.notes.hit(&limit);
                self.journal
                    .finish(entry, None, Some(format!("refused: {limit}")));
                return Err(HttpError::ConnectionLimitReached);
            }
        };
        let (origin, addrs) = match self.check(request.uri()).await {
            Ok(ok) => ok,
            Err(Refusal { reason, code }) => {
                tracing::warn!(%url, %reason, "outbound request refused");
                self.journal
                    .finish(entry, None, Some(format!("refused: {reason}")));
                return Err(code);
            }
        };
        let flows = self
            .attach_credentials(&mut request, &origin, entry)
            .await?;
        let scrubber = self.scrubber();
        if scrubber.is_some() {
            // A partial range of an echo would be a piece of a credential
            // the scrubber cannot recognise; a compressed echo one it cannot
            // read. Ask for whole, plain bodies.
            request.headers_mut().remove(http::header::RANGE);
            request.headers_mut().remove(http::header::IF_RANGE);
        }
        request.headers_mut().insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        match self
            .exchange(&origin, &addrs, request, in_flight.clone())
            .await
        {
            Ok((mut response, io)) => {
                if response.status() == http::StatusCode::UNAUTHORIZED {
                    // A revoked or expired token: the next request fetches anew.
                    for flow in flows {
                        self.tokens.invalidate(flow).await;
                    }
                }
                let status = response.status().as_u16();
                if let Some(scrubber) = &scrubber {
                    if let Some(enc) = response
                        .headers()
                        .get(http::header::CONTENT_ENCODING)
                        .filter(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
                    {
                        let reason = format!(
                            "refused: the response is encoded ({}) though the host asked for identity; \
                             an encoded body cannot be checked for the call's credentials",
                            String::from_utf8_lossy(enc.as_bytes())
                        );
                        self.journal.finish(entry, Some(status), Some(reason));
                        return Err(HttpError::HttpProtocolError);
                    }
                    scrubber.mask_headers(response.headers_mut());
                }
                self.journal.finish(entry, Some(status), None);
                let response = response.map(|body| {
                    ScrubBody::new(body.map_err(HttpError::from), scrubber, Box::new(in_flight))
                        .boxed_unsync()
                });
                Ok((response, io))
            }
            Err(e) => {
                let text = describe(&e);
                if text.contains("too large") {
                    self.notes.hit(&format!(
                        "a response's header section may hold at most {MAX_RESPONSE_HEADER_BYTES} bytes and {MAX_RESPONSE_HEADERS} fields"
                    ));
                }
                self.journal
                    .finish(entry, None, Some(self.redactor.redact(&text)));
                Err(e)
            }
        }
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
        in_flight: Arc<InFlight>,
    ) -> Result<(http::Response<hyper::body::Incoming>, IoFuture), HttpError> {
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
            let tls = tokio_rustls::TlsConnector::from(crate::tls::client_config())
                .connect(name, stream)
                .await
                .map_err(HttpError::Tls)?;
            Box::new(tls)
        } else {
            Box::new(stream)
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_header_size(MAX_RESPONSE_HEADER_BYTES)
            .max_headers(MAX_RESPONSE_HEADERS)
            .handshake(TokioIo::new(io))
            .await?;
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
            // The connection counts against the caps until it closes.
            let _in_flight = in_flight;
            if let Some(c) = conn {
                c.await.map_err(HttpError::from)?;
            }
            Ok(())
        });
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
