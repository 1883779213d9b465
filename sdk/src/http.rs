//! Outbound HTTP through the host (`wasi:http`), blocking, with JSON helpers.
//!
//! The host allows only the origins in the plugin's manifest and adds
//! credentials itself, so plugin code never handles tokens. Redirects are
//! followed here (up to 5), and the host checks every hop again.
//!
//! [`Response::error_for_status`] maps statuses to step errors the way the
//! scheduler expects: 429 and 5xx are retryable (honouring `Retry-After`),
//! other 4xx are fatal.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::StepError;

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;
/// Largest response body read, to fail clearly before memory runs out.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// RFC 3986 percent-encoding of everything but unreserved characters: for a
/// value placed in a URL path segment or query parameter.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

/// `GET url`.
pub fn get(url: &str) -> Request {
    Request::new("GET", url)
}
/// `POST url`.
pub fn post(url: &str) -> Request {
    Request::new("POST", url)
}
/// `PUT url`.
pub fn put(url: &str) -> Request {
    Request::new("PUT", url)
}
/// `PATCH url`.
pub fn patch(url: &str) -> Request {
    Request::new("PATCH", url)
}
/// `DELETE url`.
pub fn delete(url: &str) -> Request {
    Request::new("DELETE", url)
}

/// A response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// The URL that answered (after redirects).
    pub url: String,
}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: vec![("user-agent".into(), "itsm-plugin".into())],
            body: None,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Send `body` as JSON with content type `application/json`.
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Result<Self, StepError> {
        self.json_as(body, "application/json")
    }

    /// Send `body` as JSON with another content type (e.g. `application/scim+json`).
    pub fn json_as<T: Serialize + ?Sized>(
        mut self,
        body: &T,
        content_type: &str,
    ) -> Result<Self, StepError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| StepError::fatal(format!("cannot encode request body: {e}")))?;
        self.headers.retain(|(n, _)| n != "content-type");
        self.headers
            .push(("content-type".into(), content_type.into()));
        self.body = Some(bytes);
        Ok(self)
    }

    /// Send a raw body.
    pub fn body(mut self, bytes: Vec<u8>) -> Self {
        self.body = Some(bytes);
        self
    }

    /// Send, following redirects. Transport failures are retryable; a
    /// request the host refuses by policy is fatal.
    pub fn send(self) -> Result<Response, StepError> {
        let mut req = self;
        for _ in 0..=MAX_REDIRECTS {
            let resp = send_once(&req)?;
            let location = resp.header("location").map(str::to_string);
            match (resp.status, location) {
                (301 | 302 | 303 | 307 | 308, Some(loc)) => {
                    let next = resolve(&req.url, &loc)?;
                    if resp.status == 303
                        || ((resp.status == 301 || resp.status == 302) && req.method == "POST")
                    {
                        req.method = "GET".into();
                        req.body = None;
                    }
                    req.url = next;
                }
                _ => return Ok(resp),
            }
        }
        Err(StepError::fatal(format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            req.url
        )))
    }
}

impl Response {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            StepError::fatal(format!(
                "{} returned a body that is not the JSON expected: {e}",
                self.url
            ))
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Ok(self)` for 1xx-3xx; 429 and 5xx retryable (with `Retry-After`);
    /// other 4xx fatal. The message carries the start of the body.
    pub fn error_for_status(self) -> Result<Self, StepError> {
        if self.status < 400 {
            return Ok(self);
        }
        let mut snippet = self.text();
        if snippet.len() > 300 {
            let mut cut = 300;
            while !snippet.is_char_boundary(cut) {
                cut -= 1;
            }
            snippet.truncate(cut);
        }
        let message = format!("{} answered {}: {snippet}", self.url, self.status);
        if self.status == 429 || self.status >= 500 {
            Err(StepError::Retryable {
                message,
                retry_after: self.retry_after(),
            })
        } else {
            Err(StepError::Fatal(message))
        }
    }

    /// `Retry-After` in seconds, when given as a number.
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }
}

struct Parts<'a> {
    scheme: &'a str,
    authority: &'a str,
    path: &'a str,
}

fn split_url(url: &str) -> Result<Parts<'_>, StepError> {
    let bad = || StepError::fatal(format!("`{url}` is not an absolute http(s) URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(bad());
    }
    let path = path.split('#').next().unwrap_or("");
    Ok(Parts {
        scheme,
        authority,
        path: if path.is_empty() { "/" } else { path },
    })
}

fn resolve(base: &str, location: &str) -> Result<String, StepError> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let p = split_url(base)?;
    if location.starts_with('/') {
        Ok(format!("{}://{}{location}", p.scheme, p.authority))
    } else {
        let dir = p.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        Ok(format!("{}://{}{dir}/{location}", p.scheme, p.authority))
    }
}

fn transport(url: &str, what: impl std::fmt::Debug) -> StepError {
    StepError::retryable(format!("request to {url} failed: {what:?}"))
}

/// Whether a method defines a meaning for request content, so that a request
/// without a body still says `Content-Length: 0` (RFC 9110 §8.6).
fn expects_content(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH")
}

/// The headers sent: the request's own, with `Content-Length` set from the
/// body the SDK holds in full. Without it the body would go out chunked,
/// which strict servers refuse (411) and some read as empty.
fn wire_headers(req: &Request) -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .filter(|(n, _)| n != "content-length" && n != "transfer-encoding")
        .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
        .collect();
    let length = match &req.body {
        Some(bytes) => Some(bytes.len()),
        None if expects_content(&req.method) => Some(0),
        None => None,
    };
    if let Some(length) = length {
        entries.push(("content-length".into(), length.to_string().into_bytes()));
    }
    entries
}

fn send_once(req: &Request) -> Result<Response, StepError> {
    let parts = split_url(&req.url)?;
    let entries = wire_headers(req);
    let fields = Fields::from_list(&entries)
        .map_err(|e| StepError::fatal(format!("invalid request header: {e:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    let method = match req.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| StepError::fatal(format!("invalid {what} in {}", req.url));
    outgoing
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    let scheme = if parts.scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(parts.authority))
        .map_err(|()| invalid("authority"))?;
    outgoing
        .set_path_with_query(Some(parts.path))
        .map_err(|()| invalid("path"))?;
    // A request without a body gets no body resource at all, so it goes out
    // with no content (and no `Transfer-Encoding`) rather than an empty chunked one.
    let body = match &req.body {
        Some(_) => Some(outgoing.body().map_err(|()| invalid("body"))?),
        None => None,
    };
    let future =
        outgoing_handler::handle(outgoing, None).map_err(|e| refused_or_transport(&req.url, e))?;
    if let (Some(body), Some(bytes)) = (body, &req.body) {
        {
            let stream = body.write().map_err(|()| invalid("body stream"))?;
            for chunk in bytes.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| transport(&req.url, e))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| transport(&req.url, e))?;
    }
    let incoming = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = incoming
        .map_err(|()| transport(&req.url, "response already taken"))?
        .map_err(|e| refused_or_transport(&req.url, e))?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let body = response
        .consume()
        .map_err(|()| transport(&req.url, "no body"))?;
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| transport(&req.url, "no body stream"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > MAX_BODY {
                        return Err(StepError::fatal(format!(
                            "{} sent a body larger than {} MiB",
                            req.url,
                            MAX_BODY >> 20
                        )));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(transport(&req.url, e)),
            }
        }
    }
    let _trailers = IncomingBody::finish(body);
    Ok(Response {
        status,
        headers,
        body: bytes,
        url: req.url.clone(),
    })
}

fn refused_or_transport(url: &str, e: ErrorCode) -> StepError {
    match e {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
            StepError::fatal(format!(
                "the host refused the request to {url}: its origin is not granted in plugin.toml \
             [capabilities] allowed_hosts, or it resolves to a private address (see the step's request log)"
            ))
        }
        // The host's token request was refused (wrong secret, no consent):
        // fatal, as retrying cannot fix a credential.
        ErrorCode::InternalError(Some(m)) if m.starts_with("credential refused: ") => {
            StepError::fatal(format!("request to {url} not sent: {m}"))
        }
        other => transport(url, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_resolves_urls() {
        let p = split_url("http://127.0.0.1:8080/scim/v2/Users?filter=x#frag").unwrap();
        assert_eq!(
            (p.scheme, p.authority, p.path),
            ("http", "127.0.0.1:8080", "/scim/v2/Users?filter=x")
        );
        assert_eq!(split_url("https://h").unwrap().path, "/");
        assert!(split_url("ftp://h/x").is_err());
        assert_eq!(resolve("http://a/b/c", "/d").unwrap(), "http://a/d");
        assert_eq!(resolve("http://a/b/c", "d").unwrap(), "http://a/b/d");
        assert_eq!(resolve("http://a/b/c", "https://z/").unwrap(), "https://z/");
    }

    fn header<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
        entries
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    #[test]
    fn content_length_is_set_from_the_body_held_in_full() {
        let req = patch("http://h/x")
            .header("Content-Length", "999")
            .body(b"{\"a\":1}".to_vec());
        assert_eq!(header(&wire_headers(&req), "content-length"), [b"7"]);
        // A POST without a body says so; a GET or DELETE sends no length at all.
        assert_eq!(
            header(&wire_headers(&post("http://h/x")), "content-length"),
            [b"0"]
        );
        assert!(header(&wire_headers(&get("http://h/x")), "content-length").is_empty());
        assert!(header(&wire_headers(&delete("http://h/x")), "content-length").is_empty());
    }
}
