//! The one way every client command talks to the API: build a [`Call`], [`execute`] it.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::output::{self, Format};

/// Flags every client command accepts (before or after its subcommand).
#[derive(Args)]
pub struct Global {
    /// API key, sent as a Bearer token (never printed).
    #[arg(
        long,
        global = true,
        env = "PUFFLE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Base URL of the Puffle API.
    #[arg(
        long,
        global = true,
        env = "PUFFLE_API_BASE_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    base_url: String,
    /// Output: json (formatted), pretty, raw (body as received), table or csv (rows of leads, lists, items).
    #[arg(long, global = true, value_enum, default_value_t = Format::Json)]
    pub(super) format: Format,
}

/// One API request: method, path below `/api`, query and body. Commands that make several
/// requests (paging, polling) send the same call again, changed with [`Call::set_query`].
pub struct Call {
    method: Method,
    path: Vec<String>,
    query: Vec<(String, String)>,
    payload: Payload,
}

pub enum Payload {
    None,
    Json(Value),
    /// A CSV file (or `-` for stdin), streamed as the body.
    Csv(PathBuf),
}

impl Call {
    /// `path` are the segments after `/api`; each is percent-encoded as needed.
    pub fn new(method: Method, path: &[&str]) -> Call {
        Call {
            method,
            path: path.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            payload: Payload::None,
        }
    }

    /// Query parameters from the fields of `params`; absent (null) fields are not sent.
    pub fn query(mut self, params: &impl Serialize) -> Call {
        for (key, value) in present_fields(params) {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.query.push((key, value));
        }
        self
    }

    /// A JSON body made of the fields of `body`; absent (null) fields are not sent.
    pub fn json(self, body: &impl Serialize) -> Call {
        let body = Value::Object(present_fields(body).collect());
        self.payload(Payload::Json(body))
    }

    pub fn payload(mut self, payload: Payload) -> Call {
        self.payload = payload;
        self
    }

    /// Set one query parameter, replacing any value it had.
    pub fn set_query(mut self, key: &str, value: &str) -> Call {
        self.query.retain(|(k, _)| k != key);
        self.query.push((key.to_string(), value.to_string()));
        self
    }
}

/// Whether any field of these flags was given.
pub fn has_fields(flags: &impl Serialize) -> bool {
    present_fields(flags).next().is_some()
}

fn present_fields(value: &impl Serialize) -> impl Iterator<Item = (String, Value)> {
    let Value::Object(map) = serde_json::to_value(value).expect("flags serialize to JSON") else {
        unreachable!("flag structs serialize to JSON objects")
    };
    map.into_iter().filter(|(_, v)| !v.is_null())
}

/// Why a command failed: the message for stderr and the exit status.
pub struct Fail {
    status: u8,
    message: String,
    /// The same call may work if sent again later (no answer, 429, 502–504), after this delay
    /// when the API named one (`Retry-After`).
    retry: Option<Option<Duration>>,
}

impl Fail {
    /// The command line cannot work as given (exit 2, no request made).
    pub fn usage(message: impl Into<String>) -> Fail {
        Fail {
            status: 2,
            message: message.into(),
            retry: None,
        }
    }

    /// The API said no, could not be reached, or output failed (exit 1).
    pub fn failure(message: impl Into<String>) -> Fail {
        Fail {
            status: 1,
            message: message.into(),
            retry: None,
        }
    }

    fn transient(mut self, retry_after: Option<Duration>) -> Fail {
        self.retry = Some(retry_after);
        self
    }

    /// Whether sending the same call again later may succeed; `Some(delay)` when the API asked
    /// for at least that delay.
    pub fn retry(&self) -> Option<Option<Duration>> {
        self.retry
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn report(self) -> ExitCode {
        // A closed stderr must not turn an API error into a panic.
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("error: {}\n", self.message),
        );
        ExitCode::from(self.status)
    }
}

/// Send the call and print the response in the requested format.
pub async fn execute(global: &Global, call: Call) -> Result<(), Fail> {
    let api = Api::new(global)?;
    let response = api.send(&call).await?;
    output::write(global.format, response).await
}

/// What every call of one command shares: the key, the base URL and one HTTP client (so that
/// commands making several calls reuse the connection).
pub struct Api<'a> {
    key: &'a str,
    base_url: &'a str,
    client: reqwest::Client,
}

impl<'a> Api<'a> {
    pub fn new(global: &'a Global) -> Result<Api<'a>, Fail> {
        let key = global
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Fail::usage("no API key: set PUFFLE_API_KEY or pass --api-key"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("puffle-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Fail::failure(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Api {
            key,
            base_url: &global.base_url,
            client,
        })
    }

    /// Send the call; an answer other than 2xx is the API's error.
    pub async fn send(&self, call: &Call) -> Result<reqwest::Response, Fail> {
        let url = endpoint(self.base_url, call)?;
        let mut request = self
            .client
            .request(call.method.clone(), url.clone())
            .bearer_auth(self.key);
        match &call.payload {
            Payload::None => {}
            Payload::Json(body) => request = request.json(body),
            Payload::Csv(path) => {
                request = request
                    .header(CONTENT_TYPE, "text/csv")
                    .body(csv_body(path).await?)
            }
        }
        let response = request.send().await.map_err(|e| {
            if e.is_builder() {
                Fail::usage(format!(
                    "cannot build the request (is the API key well-formed?): {}",
                    causes(&e)
                ))
            } else if e.is_body() {
                Fail::failure(format!(
                    "sending the request body to {url} failed: {}",
                    causes(&e)
                ))
            } else {
                Fail::failure(format!("could not reach {url}: {}", causes(&e))).transient(None)
            }
        })?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        Ok(response)
    }

    /// Send the call and read its JSON answer: the body as received, and parsed.
    pub async fn fetch(&self, call: &Call) -> Result<(Vec<u8>, Value), Fail> {
        let response = self.send(call).await?;
        let body = response.bytes().await.map_err(|e| {
            Fail::failure(format!("reading the response failed: {e}")).transient(None)
        })?;
        let value = serde_json::from_slice(&body).map_err(|e| {
            Fail::failure(format!(
                "the API answered with something that is not JSON ({e})"
            ))
        })?;
        Ok((body.to_vec(), value))
    }
}

/// `<base>/api/<path…>?<query>`, whatever the base's trailing slash.
fn endpoint(base: &str, call: &Call) -> Result<Url, Fail> {
    let bad = |why: &str| {
        Fail::usage(format!(
            "invalid base URL {base:?} (PUFFLE_API_BASE_URL or --base-url): {why}"
        ))
    };
    let mut url = Url::parse(base.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| bad("not a base URL"))?
        .pop_if_empty()
        .push("api")
        .extend(&call.path);
    if !call.query.is_empty() {
        url.query_pairs_mut().extend_pairs(&call.query);
    }
    Ok(url)
}

/// The error's causes, outermost first, without reqwest's own "error sending request for url …".
fn causes(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// A non-2xx response as `<code>: <message> (HTTP <status>; <extra fields>)`.
async fn api_error(response: reqwest::Response) -> Fail {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let transient = matches!(status.as_u16(), 429 | 502 | 503 | 504);
    let text = response.text().await.unwrap_or_default();
    let mut details = vec![format!("HTTP {status}")];
    let headline = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut body)) if body.get("error").is_some_and(Value::is_object) => {
            let error = body.remove("error").unwrap_or_default();
            let field = |name: &str| {
                error
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            };
            for (key, value) in body {
                details.push(format!("{key}: {}", plain(&value)));
            }
            format!("{}: {}", field("code"), field("message"))
        }
        _ => {
            let text = text.trim();
            let snippet: String = text.chars().take(500).collect();
            if snippet.is_empty() {
                "the API answered with an error and no body".into()
            } else {
                format!("the API answered: {snippet}")
            }
        }
    };
    let delay = retry_after
        .as_deref()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if let Some(seconds) = retry_after {
        details.push(format!("retry after {seconds}s"));
    }
    let fail = Fail::failure(format!("{headline} ({})", details.join("; ")));
    if transient {
        fail.transient(delay)
    } else {
        fail
    }
}

/// A JSON value for a human: strings without quotes, the rest as compact JSON.
pub fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The CSV file (or stdin for `-`) as a streamed request body.
async fn csv_body(path: &Path) -> Result<reqwest::Body, Fail> {
    if path == Path::new("-") {
        return Ok(stream_body(tokio::io::stdin()));
    }
    let cannot = |e: std::io::Error| Fail::usage(format!("cannot read {}: {e}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(cannot)?;
    if file.metadata().await.map_err(cannot)?.is_dir() {
        return Err(Fail::usage(format!(
            "cannot read {}: it is a directory",
            path.display()
        )));
    }
    Ok(stream_body(file))
}

fn stream_body(reader: impl AsyncRead + Send + Unpin + 'static) -> reqwest::Body {
    let chunks = futures::stream::try_unfold(reader, |mut reader| async move {
        let mut chunk = vec![0; 64 * 1024];
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        chunk.truncate(n);
        Ok::<_, std::io::Error>(Some((chunk, reader)))
    });
    reqwest::Body::wrap_stream(chunks)
}
