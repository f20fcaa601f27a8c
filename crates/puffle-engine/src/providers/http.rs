//! `custom_http`: one HTTP request per lead, templated with the lead's data (spec §5).
//!
//! Input: `{url, method?, headers?, body?, resultPointer?, timeoutMs?}`.
//! - `url` is rendered with [`template::render_url`] (values percent-encoded), `headers` values
//!   with [`template::render_text`], `body` with [`template::render_json`]. A string `body` is
//!   sent as text (`text/plain; charset=utf-8` unless a `content-type` header says otherwise);
//!   any other non-null `body` as JSON (`application/json` by default).
//! - A 2xx answer: the value at `resultPointer` (RFC 6901; default the whole body) if not null →
//!   hit, else miss. A 2xx body that is not JSON is, without `resultPointer`, a hit with its text
//!   (trimmed); with one, a miss. An empty 2xx body is a miss. 404 → miss. 429, 5xx, timeout and
//!   transport failures → retry (with the `Retry-After` asked for). Anything else fails, naming
//!   the status.
//!
//! **Destinations.** A user-controlled URL must not reach the server's own network. Requests go
//! out on a [`GuardedClient`] (one per executor, its connections pooled), whose resolver looks
//! the host up and refuses it if any address is loopback, private, link-local, unspecified,
//! CGNAT, broadcast, multicast or reserved (including those embedded in IPv4-mapped/compatible,
//! NAT64 and 6to4 IPv6 addresses), unless the host is in [`HttpPolicy::allow_hosts`]. The
//! connection then goes only to the addresses that lookup answered: there is no second lookup a
//! rebinding DNS server could answer differently, and a pooled connection is only reused for the
//! host it was opened (and checked) for. An IP-literal host is never looked up, so it is checked
//! before sending. The client uses no proxy and **does not follow redirects**: a 3xx answer
//! fails like any other non-2xx status (re-checking each hop would be the alternative; refusing
//! is simpler and cannot be got wrong).

use std::{
    fmt,
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use puffle_domain::lead::Lead;
use reqwest::{
    header::{HeaderName, HeaderValue, CONTENT_TYPE},
    Method, StatusCode, Url,
};
use serde_json::{json, Map, Value};

use super::{
    error_chain, is_retryable_status, raw_answer, read_body, retry_after, status_sentence,
    transport_failure, Execution, MAX_BODY_BYTES, REDACTED,
};
use crate::{
    template::{self, Context, TemplateError},
    EngineConfig, Outcome,
};

pub const PROVIDER: &str = "custom_http";
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const MAX_TIMEOUT_MS: u64 = 120_000;
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
/// Headers the HTTP client sets from the request itself; a user value would break framing.
pub(crate) const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];
const WHO: &str = "the provider";

/// Where `custom_http` may connect besides public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Host names or IPs (exact, case-insensitive) that may be reached even when they resolve to
    /// loopback/private addresses (`PUFFLE_HTTP_ALLOW_HOSTS`).
    pub allow_hosts: Vec<String>,
}

impl HttpPolicy {
    pub fn from_engine(config: &EngineConfig) -> HttpPolicy {
        HttpPolicy {
            allow_hosts: config.http_allow_hosts.clone(),
        }
    }

    /// Whether `host` (as the URL names it) is listed. IPs compare as addresses, so `::1` matches
    /// `[0:0::1]`; names compare without case and without a trailing dot.
    fn allows(&self, host: &str) -> bool {
        let norm = |h: &str| {
            let h = h.trim();
            let h = h
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(h);
            h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
        };
        let host = norm(host);
        let host_ip = host.parse::<IpAddr>().ok();
        self.allow_hosts.iter().any(|allowed| {
            let allowed = norm(allowed);
            match (host_ip, allowed.parse::<IpAddr>()) {
                (Some(a), Ok(b)) => a == b,
                _ => !allowed.is_empty() && allowed == host,
            }
        })
    }
}

/// The client `custom_http` sends with: built once (per executor) from an [`HttpPolicy`], its
/// resolver refusing forbidden destinations (see the module documentation). Cloning it shares
/// the connection pool.
#[derive(Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    policy: Arc<HttpPolicy>,
}

impl fmt::Debug for GuardedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GuardedClient {
    /// Fails (saying why) only when the TLS backend cannot be set up.
    pub fn new(policy: HttpPolicy) -> Result<GuardedClient, String> {
        GuardedClient::with_lookup(policy, system_lookup)
            .map_err(|e| format!("could not set up the HTTP client: {}", error_chain(e)))
    }

    /// A client whose resolver looks names up with `lookup` (tests answer names of their own).
    fn with_lookup(policy: HttpPolicy, lookup: Lookup) -> Result<GuardedClient, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
                lookup,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("puffle/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(GuardedClient { client, policy })
    }

    pub fn policy(&self) -> &HttpPolicy {
        &self.policy
    }

    /// POST `body` to `url` under the same destination checks as `custom_http` (run webhooks
    /// use it); the answer's status. The answer's body is not read.
    pub async fn post(
        &self,
        url: Url,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<StatusCode, PostFailure> {
        let Some(host) = url.host() else {
            return Err(PostFailure::Refused("the URL has no host".into()));
        };
        // An IP literal is never looked up by the resolver: check it here (as `send` does).
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(name) => name.parse::<IpAddr>().ok(),
        };
        if let Some(ip) = literal {
            let host_text = url.host_str().unwrap_or_default();
            if let Err(refused) = check_destination(&self.policy, host_text, &[ip]) {
                return Err(PostFailure::Refused(refused.to_string()));
            }
        }
        let request = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .timeout(timeout);
        match request.send().await {
            Ok(answer) => Ok(answer.status()),
            Err(e) => Err(match find_cause::<Refused>(&e) {
                Some(refused) => PostFailure::Refused(refused.to_string()),
                None if e.is_timeout() => {
                    PostFailure::Transport(format!("no answer within {} ms", timeout.as_millis()))
                }
                None => PostFailure::Transport(error_chain(e)),
            }),
        }
    }
}

/// Why [`GuardedClient::post`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostFailure {
    /// The destination is not allowed: nothing was sent, and nothing ever will be.
    Refused(String),
    /// A transport failure (connection, DNS, timeout): worth trying again.
    Transport(String),
}

/// Looks a host name up: its addresses (ports are the URL's, set by the connector).
type Lookup = fn(String) -> LookupFuture;
type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

fn system_lookup(host: String) -> LookupFuture {
    Box::pin(async move {
        let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
        Ok(found.map(|a| a.ip()).collect())
    })
}

/// The resolver of a [`GuardedClient`]: looks the name up once and answers the addresses only if
/// the destination check passes them. The connector connects to exactly what it answers.
struct GuardedResolver {
    policy: Arc<HttpPolicy>,
    lookup: Lookup,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let policy = self.policy.clone();
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            // Errors are returned as the types themselves (not boxed twice): `send_failure`
            // finds them by type.
            let ips = match lookup.await {
                Ok(ips) if !ips.is_empty() => ips,
                Ok(_) => {
                    let reason = "no address".to_string();
                    return Err(Unresolved { host, reason }.into());
                }
                Err(e) => {
                    let reason = e.to_string();
                    return Err(Unresolved { host, reason }.into());
                }
            };
            check_destination(&policy, &host, &ips)?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A destination the policy refuses: `host` is, or resolves to, `ip`, a `kind` address. Its
/// text is the item's failure message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused {
    host: String,
    ip: IpAddr,
    kind: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refused { host, ip, kind } = self;
        if host.trim_matches(['[', ']']) == ip.to_string() {
            write!(
                f,
                "the destination {host} is not allowed: it is a {kind} address"
            )?;
        } else {
            write!(
                f,
                "the destination {host} is not allowed: it resolves to {ip}, a {kind} address"
            )?;
        }
        f.write_str(" (an operator can list the host in PUFFLE_HTTP_ALLOW_HOSTS)")
    }
}

impl std::error::Error for Refused {}

/// A host name that did not resolve (retryable: DNS may answer later).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unresolved {
    host: String,
    reason: String,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not resolve {}: {}", self.host, self.reason)
    }
}

impl std::error::Error for Unresolved {}

/// Refuse `host` if one of its addresses is forbidden, unless the policy lists it.
fn check_destination(policy: &HttpPolicy, host: &str, ips: &[IpAddr]) -> Result<(), Refused> {
    if policy.allows(host) {
        return Ok(());
    }
    match ips
        .iter()
        .find_map(|&ip| forbidden_kind(ip).map(|kind| (ip, kind)))
    {
        Some((ip, kind)) => Err(Refused {
            host: host.to_string(),
            ip,
            kind,
        }),
        None => Ok(()),
    }
}

/// The first error of type `T` in `e`'s source chain (looking inside `io::Error`s too, whose
/// `source` skips the error they wrap).
fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        let wrapped = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<T>());
        if wrapped.is_some() {
            return wrapped;
        }
        current = err.source();
    }
    None
}

/// The input, checked; templates not yet rendered.
#[derive(Debug, Clone)]
struct HttpInput {
    method: Method,
    url: String,
    headers: Vec<(HeaderName, String)>,
    body: Option<Value>,
    result_pointer: Option<String>,
    timeout: Duration,
}

/// Check a run's `input` for `custom_http` at run creation. The message names the field
/// (`input.url: …`).
pub fn validate_input(input: &Value) -> Result<(), String> {
    parse_input(input).map(|_| ())
}

/// The JSON Schema of the input, for the catalog.
pub fn input_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "http(s) URL; {{lead.<path>}} placeholders are percent-encoded"},
            "method": {"type": "string", "enum": METHODS, "default": "GET"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body": {"description": "JSON sent as the body; its string values are templated. A string body is sent as text."},
            "resultPointer": {"type": "string", "description": "RFC 6901 JSON Pointer into the answer; default the whole answer"},
            "timeoutMs": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS, "default": DEFAULT_TIMEOUT_MS}
        },
        "required": ["url"]
    })
}

fn parse_input(input: &Value) -> Result<HttpInput, String> {
    let obj = input
        .as_object()
        .ok_or_else(|| "input: must be an object".to_string())?;

    let url = match obj.get("url") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err("input.url: is required".into())
        }
        Some(_) => return Err("input.url: must be a string".into()),
    };
    let shape =
        template::render_placeholders_as(&url, "0").map_err(|e| format!("input.url: {e}"))?;
    let parsed = Url::parse(&shape).map_err(|e| format!("input.url: not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("input.url: must be an http or https URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("input.url: must name a host".into());
    }

    let method = match obj.get("method") {
        None | Some(Value::Null) => Method::GET,
        Some(Value::String(m)) => {
            let m = m.trim().to_ascii_uppercase();
            if !METHODS.contains(&m.as_str()) {
                return Err(format!(
                    "input.method: must be one of {}",
                    METHODS.join(", ")
                ));
            }
            Method::from_bytes(m.as_bytes()).map_err(|_| "input.method: invalid".to_string())?
        }
        Some(_) => return Err("input.method: must be a string".into()),
    };

    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let field = format!("input.headers.{name}");
                let header = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| format!("{field}: not a valid header name"))?;
                if RESERVED_HEADERS.contains(&header.as_str()) {
                    return Err(format!("{field}: this header is set by Puffle"));
                }
                let Value::String(template) = value else {
                    return Err(format!("{field}: must be a string"));
                };
                template::validate(template).map_err(|e| format!("{field}: {e}"))?;
                let shape = template::render_placeholders_as(template, "0")
                    .map_err(|e| format!("{field}: {e}"))?;
                HeaderValue::from_str(&shape)
                    .map_err(|_| format!("{field}: not a valid header value"))?;
                headers.push((header, template.clone()));
            }
        }
        Some(_) => return Err("input.headers: must be an object of strings".into()),
    }

    let body = match obj.get("body") {
        None | Some(Value::Null) => None,
        Some(b) => {
            template::validate_json(b).map_err(|e| format!("input.body: {e}"))?;
            Some(b.clone())
        }
    };

    let result_pointer = match obj.get("resultPointer") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => {
            if !is_json_pointer(p) {
                return Err(
                    "input.resultPointer: must be a JSON Pointer (RFC 6901), e.g. \"/data/email\""
                        .into(),
                );
            }
            Some(p.clone())
        }
        Some(_) => return Err("input.resultPointer: must be a string".into()),
    };

    let timeout_ms = match obj.get("timeoutMs") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_MS,
        Some(v) => match v.as_u64() {
            Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => ms,
            _ => {
                return Err(format!(
                    "input.timeoutMs: must be an integer from 1 to {MAX_TIMEOUT_MS}"
                ))
            }
        },
    };

    Ok(HttpInput {
        method,
        url,
        headers,
        body,
        result_pointer,
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// RFC 6901: empty, or `/`-separated tokens where `~` is only followed by `0` or `1`.
pub(crate) fn is_json_pointer(p: &str) -> bool {
    if p.is_empty() {
        return true;
    }
    p.starts_with('/') && {
        let b = p.as_bytes();
        b.iter()
            .enumerate()
            .all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
    }
}

/// Execute `custom_http` for one lead. `input` is the run's input (already checked by
/// [`validate_input`] at run creation; checked again here).
///
/// `client` carries the destination policy (see the module documentation).
pub async fn execute(client: &GuardedClient, lead: &Lead, input: &Value) -> Execution {
    let done = |outcome, input_snapshot, raw| Execution {
        outcome,
        input_snapshot,
        raw,
        provider: PROVIDER.to_string(),
        details: None,
    };
    let req = match parse_input(input) {
        Ok(r) => r,
        Err(message) => return done(Outcome::Fail(message), Value::Null, None),
    };

    // Render everything first, so that every missing placeholder is reported at once.
    let ctx = Context::new(lead, input);
    let mut errors = Vec::new();
    let url = template::render_url(&req.url, &ctx)
        .map_err(|e| errors.push(e))
        .ok();
    let mut headers = Vec::new();
    for (name, value) in &req.headers {
        match template::render_text(value, &ctx) {
            Ok(v) => headers.push((name.clone(), v)),
            Err(e) => errors.push(e),
        }
    }
    let body = match &req.body {
        None => None,
        Some(b) => template::render_json(b, &ctx)
            .map_err(|e| errors.push(e))
            .ok(),
    };
    match TemplateError::merge(errors) {
        Some(TemplateError::Missing(paths)) => {
            return done(Outcome::MissingInput, json!({ "missing": paths }), None)
        }
        Some(e @ TemplateError::UnknownPlaceholder(_)) => {
            return done(Outcome::Fail(e.to_string()), Value::Null, None)
        }
        None => {}
    }
    let url = url.unwrap_or_default();

    // Default headers and the body's bytes.
    let has = |headers: &[(HeaderName, String)], name: &HeaderName| {
        headers.iter().any(|(n, _)| n == name)
    };
    let body_bytes = match &body {
        None => None,
        Some(Value::String(text)) => {
            if !has(&headers, &CONTENT_TYPE) {
                headers.push((CONTENT_TYPE, "text/plain; charset=utf-8".into()));
            }
            Some(text.clone().into_bytes())
        }
        Some(json) => {
            if !has(&headers, &CONTENT_TYPE) {
                headers.push((CONTENT_TYPE, "application/json".into()));
            }
            Some(serde_json::to_vec(json).unwrap_or_default())
        }
    };
    if !has(&headers, &reqwest::header::ACCEPT) {
        headers.push((
            reqwest::header::ACCEPT,
            "application/json, text/plain;q=0.9, */*;q=0.8".into(),
        ));
    }

    let parsed = Url::parse(&url);
    let snapshot = json!({
        "method": req.method.as_str(),
        "url": parsed.as_ref().map_or_else(|_| url.clone(), redact_url),
        "headers": redact_headers(&headers),
        "body": body,
    });
    let url = match parsed {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => {
            let message = "the URL built from the lead is not a valid http(s) URL".to_string();
            return done(Outcome::Fail(message), snapshot, None);
        }
    };
    let mut header_map = reqwest::header::HeaderMap::new();
    for (name, value) in &headers {
        match HeaderValue::from_str(value) {
            Ok(v) => {
                header_map.append(name.clone(), v);
            }
            Err(_) => {
                let message = format!(
                    "the header {name} built from the lead is not a valid HTTP header value"
                );
                return done(Outcome::Fail(message), snapshot, None);
            }
        }
    }

    let call = send(
        client,
        url,
        req.method,
        header_map,
        body_bytes,
        req.result_pointer.as_deref(),
        req.timeout,
    );
    let (outcome, raw) = match tokio::time::timeout(req.timeout, call).await {
        Ok(answer) => answer,
        Err(_) => (
            Outcome::Retry {
                after: None,
                message: format!("{WHO} did not answer within {} ms", req.timeout.as_millis()),
            },
            None,
        ),
    };
    done(outcome, snapshot, raw)
}

/// Check an IP-literal destination, send, and read the answer into an outcome and `raw`. (A
/// host name is checked by the client's resolver.)
async fn send(
    client: &GuardedClient,
    url: Url,
    method: Method,
    headers: reqwest::header::HeaderMap,
    body: Option<Vec<u8>>,
    result_pointer: Option<&str>,
    timeout: Duration,
) -> (Outcome, Option<Value>) {
    let fail = |m: String| (Outcome::Fail(m), None);
    let (Some(host), Some(_)) = (url.host(), url.port_or_known_default()) else {
        return fail("the URL built from the lead has no host".into());
    };
    // The connector does not resolve an IP literal (nor anything that parses as one): check it
    // here.
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(name) => name.parse::<IpAddr>().ok(),
    };
    if let Some(ip) = literal {
        let host_text = url.host_str().unwrap_or_default();
        if let Err(refused) = check_destination(client.policy(), host_text, &[ip]) {
            return fail(refused.to_string());
        }
    }

    let mut request = client
        .client
        .request(method, url)
        .headers(headers)
        .timeout(timeout);
    if let Some(body) = body {
        request = request.body(body);
    }
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return (send_failure(e, timeout), None),
    };
    let status = response.status();
    let claims_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|ct| ct.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    let body = match read_body(&mut response, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => return (transport_failure(WHO, e, timeout), None),
    };
    let raw = Some(raw_answer(status, &body.bytes));

    let outcome = if status.is_success() {
        if body.truncated {
            Outcome::Fail(format!(
                "{WHO}'s answer is larger than {} MiB",
                MAX_BODY_BYTES / (1024 * 1024)
            ))
        } else {
            success_outcome(&body.bytes, result_pointer, claims_json)
        }
    } else if status == StatusCode::NOT_FOUND {
        Outcome::Miss
    } else if is_retryable_status(status) {
        Outcome::Retry {
            after: retry_after(response.headers()),
            message: status_sentence(WHO, status),
        }
    } else if status.is_redirection() {
        Outcome::Fail(format!(
            "{} (redirects are not followed: use the final URL)",
            status_sentence(WHO, status)
        ))
    } else {
        Outcome::Fail(status_sentence(WHO, status))
    };
    (outcome, raw)
}

/// A 2xx body → hit or miss. An answer that is not the JSON it should be (it says it is JSON, or
/// a `resultPointer` must be applied to it) is a bad provider answer: it fails at once.
fn success_outcome(body: &[u8], result_pointer: Option<&str>, claims_json: bool) -> Outcome {
    match serde_json::from_slice::<Value>(body) {
        Ok(json) => {
            let found = match result_pointer {
                Some(p) => json.pointer(p),
                None => Some(&json),
            };
            match found {
                Some(v) if !v.is_null() => Outcome::Hit(v.clone()),
                _ => Outcome::Miss,
            }
        }
        Err(_) if body.iter().all(u8::is_ascii_whitespace) => Outcome::Miss,
        Err(e) if claims_json || result_pointer.is_some() => {
            Outcome::Fail(format!("{WHO}'s answer is not valid JSON ({e})"))
        }
        Err(_) => match std::str::from_utf8(body) {
            Ok(text) => Outcome::Hit(Value::String(text.trim().to_string())),
            Err(_) => Outcome::Fail(format!("{WHO}'s answer is neither JSON nor UTF-8 text")),
        },
    }
}

/// The outcome of a request that got no answer: the resolver's refusal fails (the item will
/// never be allowed), a lookup failure and transport failures are retried.
fn send_failure(e: reqwest::Error, timeout: Duration) -> Outcome {
    if let Some(refused) = find_cause::<Refused>(&e) {
        return Outcome::Fail(refused.to_string());
    }
    if let Some(unresolved) = find_cause::<Unresolved>(&e) {
        return Outcome::Retry {
            after: None,
            message: unresolved.to_string(),
        };
    }
    transport_failure(WHO, e, timeout)
}

/// Why `ip` may not be reached without an allow-list entry, or `None` for a public address.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
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
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() || a >= 240 {
        Some("multicast or reserved")
    } else if (a == 192 && b == 0 && c == 0) || (a == 198 && (18..20).contains(&b)) {
        // IETF protocol assignments (192.0.0.0/24), benchmarking networks (198.18.0.0/15).
        Some("reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    // An IPv4 address in IPv6 clothing is judged as that IPv4 address: mapped (::ffff:a.b.c.d),
    // compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::).
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if seg[..6] == [0; 6] {
        return forbidden_v4(embedded(seg[6], seg[7]));
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        return forbidden_v4(embedded(seg[1], seg[2]));
    }
    match seg[0] {
        s if s & 0xfe00 == 0xfc00 => Some("private (unique local)"),
        s if s & 0xffc0 == 0xfe80 => Some("link-local"),
        s if s & 0xffc0 == 0xfec0 => Some("site-local"),
        s if s & 0xff00 == 0xff00 => Some("multicast"),
        _ => None,
    }
}

/// Whether a header or query parameter name looks like it carries a secret.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "secret",
        "key",
        "password",
        "passwd",
        "cookie",
        "session",
        "signature",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn redact_headers(headers: &[(HeaderName, String)]) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let shown = if is_secret_name(name.as_str()) {
            REDACTED.to_string()
        } else {
            value.clone()
        };
        out.insert(name.as_str().to_string(), Value::String(shown));
    }
    Value::Object(out)
}

/// The URL as the snapshot shows it: a password and the values of secret-looking query
/// parameters replaced.
fn redact_url(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("redacted"));
    }
    if let Some(query) = url.query().map(str::to_string) {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_name(&percent_decode(name)) => {
                    format!("{name}={REDACTED}")
                }
                _ => pair.to_string(),
            })
            .collect();
        url.set_query(Some(&redacted.join("&")));
    }
    url.to_string()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
