use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use axum::{
    extract::{Path, Request},
    http::{header, StatusCode as AxStatus},
    response::{IntoResponse, Response},
    routing::{any, get},
    Json, Router,
};

use super::*;
use crate::providers::test_support::{closed_port, lead, serve, serve_raw};

fn ann() -> Lead {
    lead(
        json!({
            "name": {"full": "Ann Lee"},
            "company": {"name": "Acme & Co", "domain": "acme.com"},
            "contacts": [{"type": "email", "value": "ann+x@acme.com"}],
        }),
        json!({"tier": "gold"}),
    )
}

fn allow(hosts: &[&str]) -> HttpPolicy {
    HttpPolicy {
        allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
    }
}

fn client(policy: &HttpPolicy) -> GuardedClient {
    GuardedClient::new(policy.clone()).expect("the HTTP client")
}

async fn run(policy: &HttpPolicy, input: Value) -> Execution {
    execute(&client(policy), &ann(), &input).await
}

async fn echo(req: Request) -> Json<Value> {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.to_string(), Value::String(v))
        })
        .collect();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    Json(json!({
        "method": method, "uri": uri, "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn status(Path(code): Path<u16>) -> Response {
    let code = AxStatus::from_u16(code).unwrap_or(AxStatus::IM_A_TEAPOT);
    let mut r = (code, Json(json!({"error": "as asked"}))).into_response();
    if code == AxStatus::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, "7".parse().unwrap());
    }
    r
}

/// The test provider, counting the requests it receives; `redirect_to` is where `/redirect`
/// points.
async fn provider(redirect_to: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new()
        .route("/echo/{*rest}", any(echo))
        .route(
            "/person",
            get(|| async {
                Json(json!({"data": {"email": "ann@acme.com", "score": 3}, "meta": null}))
            }),
        )
        .route("/status/{code}", any(status))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Json(json!({"late": true}))
            }),
        )
        .route("/text", get(|| async { "hello world\n" }))
        .route("/empty", get(|| async { "" }))
        .route("/null", get(|| async { Json(Value::Null) }))
        .route("/big", get(|| async { "a".repeat(MAX_BODY_BYTES + 10) }))
        .route(
            "/redirect",
            get(move || {
                let to = redirect_to.clone();
                async move { (AxStatus::FOUND, [(header::LOCATION, to)]) }
            }),
        )
        .layer(axum::middleware::map_request(move |req: Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { req }
        }));
    (serve(app).await, hits)
}

async fn loopback() -> (String, Arc<AtomicUsize>) {
    let (addr, hits) = provider(String::new()).await;
    (format!("http://{addr}"), hits)
}

fn retry_after_of(outcome: &Outcome) -> Option<Duration> {
    match outcome {
        Outcome::Retry { after, .. } => *after,
        other => panic!("expected a retry, got {other:?}"),
    }
}

fn message_of(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Retry { message, .. } | Outcome::Fail(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_2xx_with_a_value_at_the_pointer_is_a_hit() {
    let (base, hits) = loopback().await;
    let policy = allow(&["127.0.0.1"]);
    let ex = run(
        &policy,
        json!({"url": format!("{base}/person"), "resultPointer": "/data/email"}),
    )
    .await;
    assert_eq!(ex.outcome, Outcome::Hit(json!("ann@acme.com")));
    assert_eq!(ex.provider, "custom_http");
    assert_eq!(
        ex.raw,
        Some(json!({"data": {"email": "ann@acme.com", "score": 3}, "meta": null}))
    );
    assert_eq!(ex.input_snapshot["method"], "GET");
    assert_eq!(ex.input_snapshot["url"], format!("{base}/person"));
    assert_eq!(ex.input_snapshot["body"], Value::Null);
    // Without a pointer, the whole body.
    let ex = run(&policy, json!({"url": format!("{base}/person")})).await;
    assert_eq!(
        ex.outcome,
        Outcome::Hit(json!({"data": {"email": "ann@acme.com", "score": 3}, "meta": null}))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_2xx_with_nothing_at_the_pointer_and_a_404_are_misses() {
    let (base, _) = loopback().await;
    let policy = allow(&["127.0.0.1"]);
    for (path, pointer) in [
        ("/person", json!("/meta")),
        ("/person", json!("/data/phone")),
        ("/person", json!("/data/email/deeper")),
        ("/null", Value::Null),
        ("/empty", Value::Null),
        ("/status/404", Value::Null),
        ("/status/204", Value::Null),
    ] {
        let ex = run(
            &policy,
            json!({"url": format!("{base}{path}"), "resultPointer": pointer}),
        )
        .await;
        assert_eq!(ex.outcome, Outcome::Miss, "{path} {pointer}");
    }
    // A pointer cannot apply to a text answer: a bad answer, not a miss.
    let ex = run(
        &policy,
        json!({"url": format!("{base}/text"), "resultPointer": "/x"}),
    )
    .await;
    assert!(
        matches!(ex.outcome, Outcome::Fail(ref m) if m.contains("not valid JSON")),
        "{:?}",
        ex.outcome
    );
}

#[tokio::test]
async fn a_text_2xx_without_pointer_is_a_hit_with_the_text() {
    let (base, _) = loopback().await;
    let ex = run(
        &allow(&["127.0.0.1"]),
        json!({"url": format!("{base}/text")}),
    )
    .await;
    assert_eq!(ex.outcome, Outcome::Hit(json!("hello world")));
    assert_eq!(
        ex.raw,
        Some(json!({"status": 200, "text": "hello world\n"}))
    );
}

#[tokio::test]
async fn placeholders_are_encoded_in_the_url_and_inserted_in_headers_and_body() {
    let (base, _) = loopback().await;
    let input = json!({
        "url": format!("{base}/echo/{{{{lead.company.name}}}}?email={{{{ lead.contacts.0.value }}}}&api_key={{{{input.token}}}}"),
        "method": "post",
        "headers": {
            "X-Lead": "{{lead.name.full}} <{{lead.company.domain}}>",
            "Authorization": "Bearer {{input.token}}",
            "X-Api-Key": "k-{{input.token}}",
            "X-Auth-Token": "{{input.token}}",
        },
        "body": {"name": "{{lead.name.full}}", "tier": "{{lead.attributes.tier}}", "n": 5},
        "token": "s3cret-value",
    });
    let ex = run(&allow(&["127.0.0.1"]), input).await;
    let Outcome::Hit(echo) = &ex.outcome else {
        panic!("{:?}", ex.outcome)
    };
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["uri"],
        "/echo/Acme%20%26%20Co?email=ann%2Bx%40acme.com&api_key=s3cret-value"
    );
    assert_eq!(echo["headers"]["x-lead"], "Ann Lee <acme.com>");
    assert_eq!(echo["headers"]["authorization"], "Bearer s3cret-value");
    assert_eq!(echo["headers"]["content-type"], "application/json");
    let sent: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"name": "Ann Lee", "tier": "gold", "n": 5}));

    // The snapshot is the resolved request with secrets redacted.
    let snap = &ex.input_snapshot;
    assert_eq!(snap["method"], "POST");
    assert_eq!(snap["headers"]["x-lead"], "Ann Lee <acme.com>");
    for h in ["authorization", "x-api-key", "x-auth-token"] {
        assert_eq!(snap["headers"][h], REDACTED, "{h}");
    }
    assert_eq!(
        snap["url"],
        format!("{base}/echo/Acme%20%26%20Co?email=ann%2Bx%40acme.com&api_key=[redacted]")
    );
    assert_eq!(
        snap["body"],
        json!({"name": "Ann Lee", "tier": "gold", "n": 5})
    );
    assert!(!snap.to_string().contains("s3cret"), "{snap}");
}

#[tokio::test]
async fn a_string_body_is_sent_as_text() {
    let (base, _) = loopback().await;
    let input = json!({
        "url": format!("{base}/echo/form"), "method": "PUT",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "body": "name={{lead.name.full}}",
    });
    let ex = run(&allow(&["127.0.0.1"]), input).await;
    let Outcome::Hit(echo) = &ex.outcome else {
        panic!("{:?}", ex.outcome)
    };
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body"], "name=Ann Lee");
    assert_eq!(
        echo["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
}

#[tokio::test]
async fn a_missing_placeholder_skips_without_a_request() {
    let (base, hits) = loopback().await;
    let input = json!({
        "url": format!("{base}/echo/{{{{lead.title}}}}"),
        "headers": {"x-industry": "{{lead.industry}}", "x-name": "{{lead.name.full}}"},
        "body": {"t": "{{ lead.title }}"},
    });
    let ex = run(&allow(&["127.0.0.1"]), input).await;
    assert_eq!(ex.outcome, Outcome::MissingInput);
    assert_eq!(
        ex.input_snapshot,
        json!({"missing": ["lead.title", "lead.industry"]})
    );
    assert_eq!(ex.raw, None);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_429_is_retried_after_the_asked_delay_and_a_5xx_is_retried() {
    let (base, _) = loopback().await;
    let policy = allow(&["127.0.0.1"]);
    let ex = run(&policy, json!({"url": format!("{base}/status/429")})).await;
    assert_eq!(retry_after_of(&ex.outcome), Some(Duration::from_secs(7)));
    assert_eq!(
        message_of(&ex.outcome),
        "the provider answered HTTP 429 Too Many Requests"
    );
    assert_eq!(ex.raw, Some(json!({"error": "as asked"})));
    for code in [500, 502, 503] {
        let ex = run(&policy, json!({"url": format!("{base}/status/{code}")})).await;
        assert_eq!(retry_after_of(&ex.outcome), None, "{code}");
        assert!(message_of(&ex.outcome).contains(&code.to_string()));
    }
}

#[tokio::test]
async fn other_statuses_fail_naming_the_status() {
    let (base, _) = loopback().await;
    let policy = allow(&["127.0.0.1"]);
    let ex = run(
        &policy,
        json!({"url": format!("{base}/status/422"), "method": "POST", "body": {"a": 1}}),
    )
    .await;
    assert_eq!(
        ex.outcome,
        Outcome::Fail("the provider answered HTTP 422 Unprocessable Entity".into())
    );
    assert_eq!(ex.raw, Some(json!({"error": "as asked"})));
    for (code, words) in [
        (400, "400 Bad Request"),
        (401, "401 Unauthorized"),
        (403, "403 Forbidden"),
    ] {
        let ex = run(&policy, json!({"url": format!("{base}/status/{code}")})).await;
        assert!(
            matches!(&ex.outcome, Outcome::Fail(m) if m.ends_with(words)),
            "{:?}",
            ex.outcome
        );
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let (base, _) = loopback().await;
    let started = Instant::now();
    let ex = run(
        &allow(&["127.0.0.1"]),
        json!({"url": format!("{base}/slow"), "timeoutMs": 200}),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(retry_after_of(&ex.outcome), None);
    assert_eq!(
        message_of(&ex.outcome),
        "the provider did not answer within 200 ms"
    );
    assert_eq!(ex.raw, None);
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let port = closed_port().await;
    let ex = run(
        &allow(&["127.0.0.1"]),
        json!({"url": format!("http://127.0.0.1:{port}/x")}),
    )
    .await;
    assert_eq!(retry_after_of(&ex.outcome), None);
    assert!(
        message_of(&ex.outcome).starts_with("could not connect to the provider"),
        "{:?}",
        ex.outcome
    );
}

#[tokio::test]
async fn garbage_answers_never_panic() {
    let policy = allow(&["127.0.0.1"]);
    // Binary, not JSON, not UTF-8.
    let addr = serve_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n\xff\xfe\x00abcd").await;
    let ex = run(&policy, json!({"url": format!("http://{addr}/")})).await;
    assert_eq!(
        ex.outcome,
        Outcome::Fail("the provider's answer is neither JSON nor UTF-8 text".into())
    );
    assert_eq!(ex.raw.as_ref().unwrap()["status"], 200);
    // Not HTTP at all, and a body cut short: transport failures, retried.
    for bytes in [
        &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\":"[..],
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nxx"[..],
    ] {
        let addr = serve_raw(bytes).await;
        let ex = run(&policy, json!({"url": format!("http://{addr}/")})).await;
        assert!(
            matches!(ex.outcome, Outcome::Retry { .. }),
            "{:?}: {:?}",
            String::from_utf8_lossy(bytes),
            ex.outcome
        );
    }
}

#[tokio::test]
async fn an_oversized_answer_fails() {
    let (base, _) = loopback().await;
    let ex = run(
        &allow(&["127.0.0.1"]),
        json!({"url": format!("{base}/big")}),
    )
    .await;
    assert_eq!(
        ex.outcome,
        Outcome::Fail("the provider's answer is larger than 5 MiB".into())
    );
    // raw keeps only the start of it.
    assert_eq!(ex.raw.unwrap()["text"].as_str().unwrap().len(), 4096);
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allowed() {
    let (base, hits) = loopback().await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let none = HttpPolicy::default();
    let refused = [
        format!("{base}/person"),
        format!("http://localhost:{port}/person"),
        format!("http://[::1]:{port}/person"),
        format!("http://[::ffff:127.0.0.1]:{port}/person"),
        format!("http://0.0.0.0:{port}/person"),
        format!("http://2130706433:{port}/person"), // 127.0.0.1 spelled as a number
        "http://10.1.2.3/x".to_string(),
        "http://172.16.0.1/x".to_string(),
        "http://192.168.1.1/x".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://100.64.0.1/x".to_string(),
        "http://[fd00::1]/x".to_string(),
        "http://[fe80::1]/x".to_string(),
    ];
    for url in &refused {
        let ex = run(&none, json!({"url": url})).await;
        let msg = match &ex.outcome {
            Outcome::Fail(m) => m,
            other => panic!("{url}: {other:?}"),
        };
        assert!(msg.starts_with("the destination "), "{url}: {msg}");
        assert!(msg.contains("is not allowed"), "{url}: {msg}");
        assert_eq!(ex.raw, None);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused request reached the server"
    );
    let ex = run(
        &none,
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await;
    assert_eq!(
        ex.outcome,
        Outcome::Fail(
            "the destination 169.254.169.254 is not allowed: it is a link-local address \
             (an operator can list the host in PUFFLE_HTTP_ALLOW_HOSTS)"
                .into()
        )
    );
    assert_eq!(
        ex.input_snapshot["url"],
        "http://169.254.169.254/latest/meta-data/"
    );

    // Listed hosts pass, by exact host: allowing 127.0.0.1 does not allow `localhost`.
    let ex = run(
        &allow(&["127.0.0.1"]),
        json!({"url": format!("{base}/person")}),
    )
    .await;
    assert!(matches!(ex.outcome, Outcome::Hit(_)), "{:?}", ex.outcome);
    let ex = run(
        &allow(&["127.0.0.1"]),
        json!({"url": format!("http://localhost:{port}/person")}),
    )
    .await;
    assert!(matches!(&ex.outcome, Outcome::Fail(m) if m.contains("not allowed")));
    let ex = run(
        &allow(&["LocalHost"]),
        json!({"url": format!("http://localhost:{port}/person")}),
    )
    .await;
    assert!(matches!(ex.outcome, Outcome::Hit(_)), "{:?}", ex.outcome);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

/// Names for [`the_connection_goes_where_the_checked_lookup_pointed`], counting lookups.
static FAKE_LOOKUPS: AtomicUsize = AtomicUsize::new(0);

fn fake_lookup(host: String) -> LookupFuture {
    FAKE_LOOKUPS.fetch_add(1, Ordering::SeqCst);
    let ips = |list: &[&str]| list.iter().map(|ip| ip.parse().unwrap()).collect();
    let answer = match host.as_str() {
        "provider.invalid" => Ok(ips(&["127.0.0.1"])),
        "mixed.invalid" => Ok(ips(&["93.184.216.34", "10.0.0.1"])),
        "nowhere.invalid" => Ok(vec![]),
        _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
    };
    Box::pin(async move { answer })
}

#[tokio::test]
async fn the_connection_goes_where_the_checked_lookup_pointed() {
    let (base, hits) = loopback().await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let url = |host: &str| json!({"url": format!("http://{host}:{port}/person")});
    // `.invalid` never resolves (RFC 6761): reaching the server proves the connection went to
    // what the checked lookup answered, and one lookup served both requests.
    let listed = GuardedClient::with_lookup(allow(&["provider.invalid"]), fake_lookup).unwrap();
    for _ in 0..2 {
        let ex = execute(&listed, &ann(), &url("provider.invalid")).await;
        assert!(matches!(ex.outcome, Outcome::Hit(_)), "{:?}", ex.outcome);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(FAKE_LOOKUPS.load(Ordering::SeqCst), 1);

    let unlisted = GuardedClient::with_lookup(HttpPolicy::default(), fake_lookup).unwrap();
    let note = "(an operator can list the host in PUFFLE_HTTP_ALLOW_HOSTS)";
    for (host, outcome) in [
        (
            "provider.invalid",
            Outcome::Fail(format!(
                "the destination provider.invalid is not allowed: it resolves to 127.0.0.1, a \
                 loopback address {note}"
            )),
        ),
        // One forbidden address among public ones is enough.
        (
            "mixed.invalid",
            Outcome::Fail(format!(
                "the destination mixed.invalid is not allowed: it resolves to 10.0.0.1, a \
                 private address {note}"
            )),
        ),
        // A failed lookup may succeed later.
        (
            "nowhere.invalid",
            Outcome::Retry {
                after: None,
                message: "could not resolve nowhere.invalid: no address".into(),
            },
        ),
        (
            "unknown.invalid",
            Outcome::Retry {
                after: None,
                message: "could not resolve unknown.invalid: no such host".into(),
            },
        ),
    ] {
        let ex = execute(&unlisted, &ann(), &url(host)).await;
        assert_eq!(ex.outcome, outcome, "{host}");
        assert_eq!(ex.raw, None, "{host}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "a refused request reached the server"
    );
}

/// Serve `app` on 127.0.0.1, counting the TCP connections accepted.
async fn serve_counting(app: Router) -> (SocketAddr, Arc<AtomicUsize>) {
    use axum::serve::ListenerExt;
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let listener = listener.tap_io(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, connections)
}

#[tokio::test]
async fn requests_to_one_provider_reuse_a_connection() {
    let app = Router::new().route("/person", get(|| async { Json(json!({"n": 1})) }));
    let (addr, connections) = serve_counting(app).await;
    let client = client(&allow(&["127.0.0.1"]));
    let input = json!({"url": format!("http://{addr}/person"), "resultPointer": "/n"});
    for _ in 0..3 {
        let ex = execute(&client, &ann(), &input).await;
        assert_eq!(ex.outcome, Outcome::Hit(json!(1)));
        // Let the connection go back to the pool before the next item checks one out.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_name_is_judged_by_its_addresses_and_listed_by_name() {
    let (addr, connections) =
        serve_counting(Router::new().route("/person", get(|| async { Json(json!({"n": 1})) })))
            .await;
    let input = json!({"url": format!("http://localhost:{}/person", addr.port())});
    // Allowing 127.0.0.1 does not allow a name that resolves to it.
    let by_ip = client(&allow(&["127.0.0.1"]));
    for _ in 0..2 {
        let ex = execute(&by_ip, &ann(), &input).await;
        let Outcome::Fail(message) = &ex.outcome else {
            panic!("{:?}", ex.outcome)
        };
        let ip = message
            .strip_prefix("the destination localhost is not allowed: it resolves to ")
            .and_then(|m| {
                m.strip_suffix(
                    ", a loopback address (an operator can list the host in \
                     PUFFLE_HTTP_ALLOW_HOSTS)",
                )
            })
            .unwrap_or_else(|| panic!("{message}"));
        assert!(ip.parse::<IpAddr>().unwrap().is_loopback(), "{message}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    // Listing the name allows it.
    let by_name = client(&allow(&["localhost"]));
    let ex = execute(&by_name, &ann(), &input).await;
    assert_eq!(ex.outcome, Outcome::Hit(json!({"n": 1})));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (secret, secret_hits) = loopback().await;
    let (addr, _) = provider(format!("{secret}/person")).await;
    let ex = run(
        &allow(&["127.0.0.1"]),
        json!({"url": format!("http://{addr}/redirect")}),
    )
    .await;
    assert_eq!(
        ex.outcome,
        Outcome::Fail(
            "the provider answered HTTP 302 Found (redirects are not followed: use the final URL)"
                .into()
        )
    );
    assert_eq!(secret_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_header_value_the_lead_breaks_fails_without_a_request() {
    let (base, hits) = loopback().await;
    let evil = lead(json!({"name": {"full": "Ann\r\nX-Admin: yes"}}), json!({}));
    let input =
        json!({"url": format!("{base}/echo/x"), "headers": {"x-name": "{{lead.name.full}}"}});
    let ex = execute(&client(&allow(&["127.0.0.1"])), &evil, &input).await;
    assert_eq!(
        ex.outcome,
        Outcome::Fail(
            "the header x-name built from the lead is not a valid HTTP header value".into()
        )
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn inputs_are_checked_field_by_field() {
    let ok = [
        json!({"url": "https://api.example.com/v1?d={{lead.company.domain}}"}),
        json!({"url": "https://{{lead.domain}}/about", "method": "head"}),
        json!({"url": "http://h:8080/x", "method": "DELETE", "headers": {"X-Key": "{{input.k}}"},
               "body": ["{{lead.id}}", 1], "resultPointer": "", "timeoutMs": 120000}),
        json!({"url": "http://h/x", "resultPointer": "/a~1b/0/~0c", "timeoutMs": 1}),
    ];
    for input in ok {
        assert_eq!(validate_input(&input), Ok(()), "{input}");
    }
    let bad = [
        (json!("https://x"), "input:"),
        (json!({}), "input.url:"),
        (json!({"url": "  "}), "input.url:"),
        (json!({"url": 5}), "input.url:"),
        (json!({"url": "ftp://h/x"}), "input.url:"),
        (json!({"url": "file:///etc/passwd"}), "input.url:"),
        (json!({"url": "/relative"}), "input.url:"),
        (json!({"url": "{{lead.website}}"}), "input.url:"),
        (json!({"url": "https://h/{{company.domain}}"}), "input.url:"),
        (
            json!({"url": "http://h", "method": "TRACE"}),
            "input.method:",
        ),
        (json!({"url": "http://h", "method": 1}), "input.method:"),
        (
            json!({"url": "http://h", "headers": ["a"]}),
            "input.headers:",
        ),
        (
            json!({"url": "http://h", "headers": {"a b": "x"}}),
            "input.headers.a b:",
        ),
        (
            json!({"url": "http://h", "headers": {"x": 1}}),
            "input.headers.x:",
        ),
        (
            json!({"url": "http://h", "headers": {"Host": "x"}}),
            "input.headers.Host:",
        ),
        (
            json!({"url": "http://h", "headers": {"x": "a\nb"}}),
            "input.headers.x:",
        ),
        (
            json!({"url": "http://h", "headers": {"x": "{{lea.d}}"}}),
            "input.headers.x:",
        ),
        (
            json!({"url": "http://h", "body": {"a": ["{{nope}}"]}}),
            "input.body:",
        ),
        (
            json!({"url": "http://h", "resultPointer": "data/x"}),
            "input.resultPointer:",
        ),
        (
            json!({"url": "http://h", "resultPointer": "/a~2"}),
            "input.resultPointer:",
        ),
        (
            json!({"url": "http://h", "timeoutMs": 0}),
            "input.timeoutMs:",
        ),
        (
            json!({"url": "http://h", "timeoutMs": 120001}),
            "input.timeoutMs:",
        ),
        (
            json!({"url": "http://h", "timeoutMs": 1.5}),
            "input.timeoutMs:",
        ),
        (
            json!({"url": "http://h", "timeoutMs": "100"}),
            "input.timeoutMs:",
        ),
    ];
    for (input, field) in bad {
        let err = validate_input(&input).expect_err(&input.to_string());
        assert!(err.starts_with(field), "{input}: {err}");
    }
}

#[test]
fn forbidden_addresses_are_recognised() {
    let forbidden = [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "0.1.2.3",
        "100.64.0.1",
        "100.127.255.255",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "192.0.0.8",
        "198.18.0.1",
        "::",
        "::1",
        "fc00::1",
        "fdff::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:c0a8:0101::1",
    ];
    for ip in forbidden {
        let ip: IpAddr = ip.parse().unwrap();
        assert!(forbidden_kind(ip).is_some(), "{ip}");
    }
    let public = [
        "93.184.216.34",
        "8.8.8.8",
        "172.32.0.1",
        "100.128.0.1",
        "192.169.0.1",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2001:4860::8888",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ];
    for ip in public {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(forbidden_kind(ip), None, "{ip}");
    }
    assert_eq!(
        forbidden_kind("169.254.169.254".parse().unwrap()),
        Some("link-local")
    );
    assert_eq!(
        forbidden_kind("::ffff:192.168.1.1".parse().unwrap()),
        Some("private")
    );
}

#[test]
fn allow_list_matching_is_exact_and_case_insensitive() {
    let p = allow(&["Internal.Example.com", "[::1]", "10.0.0.5", " "]);
    assert!(p.allows("internal.example.com"));
    assert!(p.allows("INTERNAL.example.com."));
    assert!(p.allows("[::1]"));
    assert!(p.allows("[0:0:0:0:0:0:0:1]"));
    assert!(p.allows("10.0.0.5"));
    assert!(!p.allows("example.com"));
    assert!(!p.allows("x.internal.example.com"));
    assert!(!p.allows("10.0.0.6"));
    assert!(!p.allows(""));
    assert!(!HttpPolicy::default().allows("localhost"));
    let from_config = HttpPolicy::from_engine(&EngineConfig {
        http_allow_hosts: vec!["a.test".into()],
        ..EngineConfig::default()
    });
    assert!(from_config.allows("A.TEST"));
}

#[test]
fn snapshots_hide_secret_query_values_and_passwords() {
    let url =
        Url::parse("https://u:pw@h.test/x?q=1&apiKey=abc&ACCESS_TOKEN=t&keyword=k#f").unwrap();
    let shown = redact_url(&url);
    assert!(
        !shown.contains("pw") && !shown.contains("abc") && !shown.contains("=t&"),
        "{shown}"
    );
    assert!(
        shown.contains("q=1") && shown.contains("apiKey=[redacted]"),
        "{shown}"
    );
    assert!(shown.ends_with("#f"), "{shown}");
    assert_eq!(
        redact_url(&Url::parse("https://h.test/a?b=c").unwrap()),
        "https://h.test/a?b=c"
    );
    for name in [
        "Authorization",
        "x-api-key",
        "X-Auth-Token",
        "client_secret",
        "Cookie",
    ] {
        assert!(is_secret_name(name), "{name}");
    }
    for name in ["accept", "x-lead", "content-type", "user-agent"] {
        assert!(!is_secret_name(name), "{name}");
    }
}

#[test]
fn json_pointers_follow_rfc_6901() {
    for p in ["", "/", "/a", "/a/0", "/a~0b/~1", "/ü/ /x"] {
        assert!(is_json_pointer(p), "{p}");
    }
    for p in ["a", "a/b", "/a~", "/a~2", "#/a"] {
        assert!(!is_json_pointer(p), "{p}");
    }
}

/// Throughput of the hot path: `items` requests on one client, `concurrency` at a time (each
/// of `concurrency` tasks sends its next request when its last one is answered), against a
/// loopback provider that answers after `latency`. Prints items/s against the ideal
/// `concurrency / latency`, and against the ideal at the latency the provider really had (its
/// `tokio::time::sleep` overshoots by about a millisecond), and the connections it accepted.
/// Run in release:
/// `cargo test --release -p puffle-engine -- --ignored custom_http_throughput --nocapture`
/// (`BENCH_ITEMS`, `BENCH_CONCURRENCY` and `BENCH_LATENCY_MS` change the defaults, 2000, 64
/// and 20).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run it on purpose, in release mode"]
async fn custom_http_throughput() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let items = env("BENCH_ITEMS", 2_000) as usize;
    let concurrency = env("BENCH_CONCURRENCY", 64) as usize;
    let latency = Duration::from_millis(env("BENCH_LATENCY_MS", 20));
    let slept_us = Arc::new(AtomicUsize::new(0));
    let slept = slept_us.clone();
    let app = Router::new().route(
        "/person",
        get(move || async move {
            let started = Instant::now();
            tokio::time::sleep(latency).await;
            let us = started.elapsed().as_micros() as usize;
            slept.fetch_add(us, Ordering::Relaxed);
            Json(json!({"data": {"email": "ann@acme.com"}}))
        }),
    );
    let (addr, connections) = serve_counting(app).await;
    let client = Arc::new(client(&allow(&["127.0.0.1"])));
    let input =
        Arc::new(json!({"url": format!("http://{addr}/person"), "resultPointer": "/data/email"}));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, input, next) = (client.clone(), input.clone(), next.clone());
        tasks.spawn(async move {
            let lead = ann();
            let mut done = 0;
            while next.fetch_add(1, Ordering::SeqCst) < items {
                let ex = execute(&client, &lead, &input).await;
                assert_eq!(ex.outcome, Outcome::Hit(json!("ann@acme.com")));
                done += 1;
            }
            done
        });
    }
    let mut done = 0;
    while let Some(n) = tasks.join_next().await {
        done += n.expect("a bench task");
    }
    let elapsed = started.elapsed();
    assert_eq!(done, items);
    let rate = items as f64 / elapsed.as_secs_f64();
    let ideal = concurrency as f64 / latency.as_secs_f64();
    let real_latency = slept_us.load(Ordering::Relaxed) as f64 / items as f64 / 1e6;
    let real_ideal = concurrency as f64 / real_latency;
    println!(
        "custom_http: {items} items at concurrency {concurrency} against a {} ms provider in \
         {:.2} s: {rate:.0} items/s, {:.1}% of the ideal {ideal:.0} items/s; the provider took \
         {:.2} ms on average: {:.1}% of the ideal {real_ideal:.0} items/s at that latency; {} \
         connections",
        latency.as_millis(),
        elapsed.as_secs_f64(),
        100.0 * rate / ideal,
        real_latency * 1e3,
        100.0 * rate / real_ideal,
        connections.load(Ordering::SeqCst),
    );
}
