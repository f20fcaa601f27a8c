//! The test harness: start a real server on a free port with a fresh database, talk to it.

#![allow(dead_code)]

use std::path::PathBuf;

use puffle_server::{Config, Running};
use puffle_store::scratch::{server_url, ScratchDatabase};
use reqwest::Method;
use serde_json::{json, Value};

/// A running server with a fresh SQLite database, and the bootstrap admin's key.
pub struct TestApp {
    pub base_url: String,
    /// The bootstrap admin's API key (workspace `default`, 1000 credits).
    pub key: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    server: Option<Running>,
    /// The configuration the server was (last) started with, for [`TestApp::restart`].
    config: Config,
    /// On PostgreSQL, the test's own database, dropped after the server (fields drop in order).
    _database: Option<ScratchDatabase>,
}

/// Whether this build of the suite runs on PostgreSQL: the same tests are built twice, as the
/// `e2e` target (SQLite) and the `e2e_postgres` target.
pub fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME") == "e2e_postgres"
}

/// A fresh, empty database for one test: a file in `dir` on SQLite, a database of its own on
/// PostgreSQL. Without a PostgreSQL server the PostgreSQL suite is skipped as a whole (with a
/// message), unless `PUFFLE_TEST_REQUIRE_POSTGRES` is set, as CI does.
pub async fn fresh_database(dir: &std::path::Path) -> (String, Option<ScratchDatabase>) {
    if !on_postgres() {
        let url = format!("sqlite://{}", dir.join("puffle.db").display());
        return (url, None);
    }
    match ScratchDatabase::create(&server_url()).await {
        Ok(db) => (db.url.clone(), Some(db)),
        Err(e) if std::env::var_os("PUFFLE_TEST_REQUIRE_POSTGRES").is_none() => {
            eprintln!(
                "skipped: the PostgreSQL end-to-end suite needs a server at {} ({e}); \
                 set PUFFLE_TEST_POSTGRES_URL to point it elsewhere",
                server_url()
            );
            std::process::exit(0)
        }
        Err(e) => panic!("no PostgreSQL at {}: {e}", server_url()),
    }
}

/// A response: status code and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Start a server after letting the test adjust its configuration.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, database) = fresh_database(dir.path()).await;
        Self::spawn_on(dir, database_url, database, adjust).await
    }

    /// Start a server on an empty database the test provides.
    pub async fn spawn_on(
        dir: tempfile::TempDir,
        database_url: String,
        database: Option<ScratchDatabase>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestApp {
        let mut config = Config::new("127.0.0.1:0", database_url.clone());
        adjust(&mut config);
        let server = puffle_server::start(config.clone())
            .await
            .expect("server starts");
        let key = server
            .bootstrap_key
            .as_ref()
            .expect("a fresh database is bootstrapped")
            .expose()
            .to_string();
        TestApp {
            base_url: format!("http://{}", server.addr),
            key,
            client: reqwest::Client::new(),
            dir,
            database_url,
            server: Some(server),
            config,
            _database: database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Send with the admin key.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.call_as(&self.key, method, path, body).await
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        Resp::from(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str, body: Value) -> Resp {
        self.call(Method::DELETE, path, Some(body)).await
    }

    /// Send a raw request (any headers, any body bytes).
    pub async fn raw(&self, req: reqwest::RequestBuilder) -> Resp {
        Resp::from(req.send().await.expect("request sent")).await
    }

    /// Create a user through the admin API; returns (user object, api key).
    pub async fn create_user(
        &self,
        email: &str,
        role: &str,
        workspace_id: Option<&str>,
    ) -> (Value, String) {
        let mut body = json!({"email": email, "role": role});
        if let Some(ws) = workspace_id {
            body["workspaceId"] = json!(ws);
        }
        let r = self.post("/api/admin/users", body).await;
        assert_eq!(r.status, 200, "create user: {}", r.text);
        (
            r.body["user"].clone(),
            r.body["apiKey"].as_str().unwrap().to_string(),
        )
    }

    /// The workspace id of the admin key.
    pub async fn workspace_id(&self) -> String {
        self.get("/api/account").await.body["workspace"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Create a lead with the admin key and return it.
    pub async fn lead(&self, body: Value) -> Value {
        let r = self.post("/api/leads", body).await;
        assert_eq!(r.status, 200, "create lead: {}", r.text);
        r.body["lead"].clone()
    }

    /// The `puffle` binary, pointed at this server with the admin key.
    pub fn cli(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_puffle"));
        cmd.env("PUFFLE_API_BASE_URL", &self.base_url)
            .env("PUFFLE_API_KEY", &self.key)
            .env_remove("PUFFLE_DATABASE_URL")
            .current_dir(self.dir.path());
        cmd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Stop the server gracefully (the database stays in `dir`).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

impl Resp {
    async fn from(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            headers,
        }
    }

    /// Assert the spec's error envelope with this status and code; returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got: {}",
            self.text
        );
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.text);
        let message = self.body["error"]["message"]
            .as_str()
            .expect("error.message is a string");
        assert!(!message.is_empty());
        message.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers of the resource tests (accounts, leads, lists, import, credits, errors, service).

impl TestApp {
    /// Send with `key` and extra headers (e.g. `X-Puffle-Effective-User`).
    pub async fn call_with_headers(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(key);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.raw(req).await
    }

    /// Create a list with the admin key and return it.
    pub async fn list(&self, body: Value) -> Value {
        let r = self.post("/api/lists", body).await;
        assert_eq!(r.status, 200, "create list: {}", r.text);
        r.body["list"].clone()
    }

    /// The lists of `key`'s workspace, newest first.
    pub async fn lists_as(&self, key: &str) -> Vec<Value> {
        let r = self.call_as(key, Method::GET, "/api/lists", None).await;
        assert_eq!(r.status, 200, "get lists: {}", r.text);
        r.body["lists"]
            .as_array()
            .expect("lists is an array")
            .clone()
    }

    /// The protected list `all` of `key`'s workspace.
    pub async fn all_list_as(&self, key: &str) -> Value {
        let lists = self.lists_as(key).await;
        let all: Vec<&Value> = lists.iter().filter(|l| l["name"] == "all").collect();
        assert_eq!(all.len(), 1, "exactly one list named all: {lists:?}");
        all[0].clone()
    }

    /// One list of the admin's workspace by id (fails if absent).
    pub async fn get_list(&self, id: &str) -> Value {
        let lists = self.lists_as(&self.key).await;
        lists
            .into_iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("list {id} not in GET /api/lists"))
    }

    /// The lead with this id as seen by the admin key, `None` when `GET /api/leads?id=` has none.
    pub async fn get_lead(&self, id: &str) -> Option<Value> {
        let r = self.get(&format!("/api/leads?id={id}")).await;
        assert_eq!(r.status, 200, "get lead: {}", r.text);
        let leads = r.body["leads"].as_array().expect("leads is an array");
        assert!(
            leads.len() <= 1,
            "id filter returned several leads: {}",
            r.text
        );
        leads.first().cloned()
    }

    /// Every lead of `key`'s workspace (follows `nextCursor`).
    pub async fn all_leads_as(&self, key: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = "/api/leads?limit=500".to_string();
        loop {
            let r = self.call_as(key, Method::GET, &path, None).await;
            assert_eq!(r.status, 200, "get leads: {}", r.text);
            out.extend(
                r.body["leads"]
                    .as_array()
                    .expect("leads is an array")
                    .iter()
                    .cloned(),
            );
            match r.body["nextCursor"].as_str() {
                Some(c) => path = format!("/api/leads?limit=500&cursor={c}"),
                None => return out,
            }
        }
    }

    /// Send a body with an explicit content type (CSV imports, raw JSON text).
    pub async fn send_text(
        &self,
        key: &str,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<String>,
    ) -> Resp {
        let req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body.into());
        self.raw(req).await
    }
}

impl Resp {
    /// Assert `400 invalid_request` whose message names `field`; returns the message.
    pub fn assert_invalid(&self, field: &str) -> String {
        let message = self.assert_error(400, "invalid_request");
        assert!(
            message.contains(field),
            "message should name {field:?}: {}",
            self.text
        );
        message
    }
}

/// A string id we mint: UUIDv7, lowercase and hyphenated.
pub fn assert_id(v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("id should be a string: {v}"));
    let b = s.as_bytes();
    let shape = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    assert!(shape, "id should be a lowercase hyphenated UUID: {s}");
    assert_eq!(b[14], b'7', "id should be a UUIDv7: {s}");
    assert!(
        matches!(b[19], b'8' | b'9' | b'a' | b'b'),
        "id should have the RFC 4122 variant: {s}"
    );
}

/// A timestamp as the API writes them: `2026-11-28T14:00:00.123Z`.
pub fn assert_timestamp(v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp should be a string: {v}"));
    let shape = s.len() == 24
        && s.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            19 => c == '.',
            23 => c == 'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(
        shape,
        "timestamp should be RFC 3339 UTC with milliseconds: {s}"
    );
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
    assert!(
        (1..=12).contains(&num(5..7)) && (1..=31).contains(&num(8..10)),
        "bad date: {s}"
    );
    assert!(
        num(11..13) < 24 && num(14..16) < 60 && num(17..19) < 61,
        "bad time: {s}"
    );
}

/// `v` is an object holding every key of `keys` (values may be null, never absent).
pub fn assert_keys(v: &Value, keys: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("expected an object: {v}"));
    for k in keys {
        assert!(obj.contains_key(*k), "key {k:?} missing from {v}");
    }
}

/// Every documented key of a Lead (spec §3), with ids and timestamps in their shapes.
pub fn assert_lead_shape(lead: &Value) {
    assert_keys(
        lead,
        &[
            "id",
            "type",
            "name",
            "title",
            "company",
            "location",
            "socials",
            "contacts",
            "domain",
            "industry",
            "size",
            "attributes",
            "raw",
            "sources",
            "lists",
            "createdAt",
            "updatedAt",
        ],
    );
    assert_id(&lead["id"]);
    assert!(
        lead["type"] == "person" || lead["type"] == "company",
        "type: {lead}"
    );
    assert_keys(
        &lead["name"],
        &["full", "short", "aliases", "first", "last"],
    );
    assert!(
        lead["name"]["aliases"].is_array(),
        "name.aliases is an array: {lead}"
    );
    assert_keys(&lead["company"], &["name", "id", "domain"]);
    assert_keys(&lead["location"], &["city", "state", "country", "raw"]);
    for s in lead["socials"].as_array().expect("socials is an array") {
        assert_keys(s, &["type", "url"]);
    }
    for c in lead["contacts"].as_array().expect("contacts is an array") {
        assert_keys(c, &["type", "value"]);
    }
    for s in lead["sources"].as_array().expect("sources is an array") {
        assert_keys(s, &["id", "provider", "externalId"]);
    }
    for l in lead["lists"].as_array().expect("lists is an array") {
        assert_keys(l, &["id", "name"]);
        assert_id(&l["id"]);
    }
    assert!(
        lead["attributes"].is_object(),
        "attributes is an object: {lead}"
    );
    assert_timestamp(&lead["createdAt"]);
    assert_timestamp(&lead["updatedAt"]);
}

/// Every documented key of a List (spec §4).
pub fn assert_list_shape(list: &Value) {
    assert_keys(
        list,
        &[
            "id",
            "name",
            "description",
            "leadType",
            "leadCount",
            "personCount",
            "companyCount",
            "createdAt",
            "updatedAt",
        ],
    );
    assert_id(&list["id"]);
    assert!(list["name"].is_string(), "name is a string: {list}");
    assert!(
        ["person", "company", "mixed"].contains(&list["leadType"].as_str().unwrap_or("")),
        "leadType: {list}"
    );
    for k in ["leadCount", "personCount", "companyCount"] {
        assert!(
            list[k].as_i64().is_some_and(|n| n >= 0),
            "{k} is a count: {list}"
        );
    }
    assert_eq!(
        list["leadCount"].as_i64().unwrap(),
        list["personCount"].as_i64().unwrap() + list["companyCount"].as_i64().unwrap(),
        "leadCount = personCount + companyCount: {list}"
    );
    assert_timestamp(&list["createdAt"]);
    assert_timestamp(&list["updatedAt"]);
}

/// The ids of an array of objects, in order.
pub fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array: {v}"))
        .iter()
        .map(|x| x["id"].as_str().expect("id is a string").to_string())
        .collect()
}

/// A well-formed id that names nothing.
pub fn unknown_id() -> String {
    puffle_domain::new_id()
}

// ---------------------------------------------------------------------------------------------
// Enrichment runs (spec §5, §6): servers that may reach loopback providers, restarts, runs,
// items, credits, and the shapes of the catalog, runs and items.

/// The run statuses after which nothing changes any more.
pub const TERMINAL_RUN_STATUSES: &[&str] = &["completed", "failed", "cancelled"];
/// The item statuses (spec §6), in the order of `run.scope.counts`.
pub const ITEM_STATUSES: &[&str] = &["pending", "running", "completed", "skipped", "failed"];

impl TestApp {
    /// A server whose `custom_http` may reach providers on 127.0.0.1, with quick retries.
    pub async fn spawn_for_providers() -> TestApp {
        Self::spawn_for_providers_with(|_| {}).await
    }

    /// [`TestApp::spawn_for_providers`], then let the test adjust the configuration further.
    pub async fn spawn_for_providers_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_with(|c| {
            c.engine.http_allow_hosts = vec!["127.0.0.1".into()];
            c.engine.retry_base = std::time::Duration::from_millis(20);
            c.engine.retry_max = std::time::Duration::from_millis(200);
            adjust(c);
        })
        .await
    }

    /// Stop the server and start a new one on the same database file with the same
    /// configuration (a new port). The admin key keeps working: a non-empty database is never
    /// re-bootstrapped.
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await
    }

    /// [`TestApp::restart`] after adjusting the configuration (e.g. start workers).
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.stop().await;
        let mut config = self.config.clone();
        config.bind = "127.0.0.1:0".into();
        adjust(&mut config);
        let server = puffle_server::start(config.clone())
            .await
            .expect("server restarts");
        assert!(
            server.bootstrap_key.is_none(),
            "a non-empty database is never re-bootstrapped"
        );
        self.base_url = format!("http://{}", server.addr);
        self.config = config;
        self.server = Some(server);
    }

    /// `POST /api/enrichment` with the admin key.
    pub async fn enrich(&self, body: Value) -> Resp {
        self.post("/api/enrichment", body).await
    }

    /// `POST /api/enrichment` with `key`.
    pub async fn enrich_as(&self, key: &str, body: Value) -> Resp {
        self.call_as(key, Method::POST, "/api/enrichment", Some(body))
            .await
    }

    /// Start a run with the admin key, assert the documented response, and return its id.
    pub async fn start_run(&self, body: Value) -> String {
        let r = self.enrich(body.clone()).await;
        assert_eq!(r.status, 200, "POST /api/enrichment {body}: {}", r.text);
        assert_create_shape(&r.body);
        r.body["runId"].as_str().unwrap().to_string()
    }

    /// `GET /api/enrichment/{id}` with the admin key; asserts 200 and the run shape, returns `run`.
    pub async fn run_status(&self, id: &str) -> Value {
        self.run_status_as(&self.key, id).await
    }

    /// `GET /api/enrichment/{id}` with `key`; asserts 200 and the run shape, returns `run`.
    pub async fn run_status_as(&self, key: &str, id: &str) -> Value {
        let r = self
            .call_as(key, Method::GET, &format!("/api/enrichment/{id}"), None)
            .await;
        assert_eq!(r.status, 200, "GET /api/enrichment/{id}: {}", r.text);
        assert_keys(&r.body, &["run"]);
        assert_run_shape(&r.body["run"]);
        r.body["run"].clone()
    }

    /// Poll the run (admin key) until it is terminal; panics after 30 s.
    pub async fn wait_run(&self, id: &str) -> Value {
        self.wait_run_for(id, std::time::Duration::from_secs(30))
            .await
    }

    /// Poll the run until it is terminal; panics after `timeout`.
    pub async fn wait_run_for(&self, id: &str, timeout: std::time::Duration) -> Value {
        self.wait_run_until(id, timeout, "terminal", |run| {
            TERMINAL_RUN_STATUSES.contains(&run["status"].as_str().unwrap_or(""))
        })
        .await
    }

    /// Poll the run (admin key) every 25 ms until `pred` holds; panics after `timeout` naming
    /// `what` and the last state seen. Every state seen is checked with [`assert_run_shape`]
    /// (so counts always sum to `resolvedCount`).
    pub async fn wait_run_until(
        &self,
        id: &str,
        timeout: std::time::Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let run = self.run_status(id).await;
            if pred(&run) {
                return run;
            }
            if std::time::Instant::now() > deadline {
                panic!("run {id} not {what} after {timeout:?}: {run}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Poll `GET /metrics` until the sample `series` satisfies `pred` (10 s at most).
    pub async fn wait_for_metric(&self, series: &str, pred: impl Fn(f64) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = self.get("/metrics").await.text;
            if sample(&text, series).is_some_and(&pred) {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!("{series} never as expected:\n{text}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// `GET /api/enrichment/{id}/items{query}` with the admin key (`query` starts with `?` or is
    /// empty).
    pub async fn items_page(&self, id: &str, query: &str) -> Resp {
        self.get(&format!("/api/enrichment/{id}/items{query}"))
            .await
    }

    /// Every item of the run (admin key), following `nextCursor` with `limit=100`; asserts the
    /// page shape, the item shape, ascending ids and no repeats.
    pub async fn all_items(&self, id: &str) -> Vec<Value> {
        self.all_items_where(id, "").await
    }

    /// Like [`TestApp::all_items`] with extra query parameters (`"&status=completed"`).
    pub async fn all_items_where(&self, id: &str, extra: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = format!("?limit=100{extra}");
            if let Some(c) = &cursor {
                query.push_str(&format!("&cursor={c}"));
            }
            let r = self.items_page(id, &query).await;
            assert_eq!(r.status, 200, "GET items {query}: {}", r.text);
            assert_items_page(&r.body, 100);
            let items = r.body["items"].as_array().unwrap();
            for item in items {
                if let Some(last) = out.last() {
                    assert!(
                        item["id"].as_str() > last["id"].as_str(),
                        "items ascending by id, no repeats: {} after {}",
                        item["id"],
                        last["id"]
                    );
                }
                out.push(item.clone());
            }
            match r.body["page"]["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// The workspace balance of the admin key.
    pub async fn balance(&self) -> i64 {
        let r = self.get("/api/credits").await;
        assert_eq!(r.status, 200, "GET /api/credits: {}", r.text);
        r.body["balance"].as_i64().expect("balance is an integer")
    }

    /// The ledger of the admin's workspace, newest first.
    pub async fn ledger(&self) -> Vec<Value> {
        let r = self.get("/api/credits").await;
        assert_eq!(r.status, 200, "GET /api/credits: {}", r.text);
        r.body["ledger"]
            .as_array()
            .expect("ledger is an array")
            .clone()
    }

    /// Grant (or take, when negative) credits to the admin's workspace.
    pub async fn grant(&self, amount: i64) {
        let ws = self.workspace_id().await;
        let r = self
            .post(
                "/api/admin/credits",
                json!({"workspaceId": ws, "amount": amount}),
            )
            .await;
        assert_eq!(r.status, 200, "grant {amount}: {}", r.text);
    }

    /// Create leads in bulk through `POST /api/lists/import` (500 per request), optionally into a
    /// list; returns their ids in input order.
    pub async fn import_leads(&self, leads: Vec<Value>, list_id: Option<&str>) -> Vec<String> {
        let mut out = Vec::with_capacity(leads.len());
        for chunk in leads.chunks(500) {
            let mut body = json!({"leads": chunk});
            if let Some(l) = list_id {
                body["listId"] = json!(l);
            }
            let r = self.post("/api/lists/import", body).await;
            assert_eq!(r.status, 200, "import: {}", r.text);
            out.extend(
                r.body["leadIds"]
                    .as_array()
                    .expect("leadIds")
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string()),
            );
        }
        out
    }

    /// `n` companies named `{prefix}{i}` with domain `{prefix}{i}.example`, optionally in a list.
    pub async fn companies(&self, prefix: &str, n: usize, list_id: Option<&str>) -> Vec<String> {
        let leads = (0..n)
            .map(|i| {
                json!({"type": "company", "name": format!("{prefix}{i}"),
                       "domain": format!("{prefix}{i}.example")})
            })
            .collect();
        self.import_leads(leads, list_id).await
    }
}

/// The response of `POST /api/enrichment` (spec §6).
pub fn assert_create_shape(body: &Value) {
    assert_keys(
        body,
        &[
            "enrichmentRunId",
            "runId",
            "status",
            "leadCount",
            "triggerRunId",
            "reusedExistingRun",
        ],
    );
    assert_id(&body["runId"]);
    assert_eq!(
        body["enrichmentRunId"], body["runId"],
        "the same id: {body}"
    );
    // A new run is pending (completed when empty); a reused one answers its status now.
    let statuses: &[&str] = if body["reusedExistingRun"] == true {
        &["pending", "running", "completed", "failed", "cancelled"]
    } else {
        &["pending", "completed"]
    };
    assert!(
        statuses.contains(&body["status"].as_str().unwrap_or("")),
        "status: {body}"
    );
    assert!(
        body["leadCount"].as_i64().is_some_and(|n| n >= 0),
        "leadCount: {body}"
    );
    assert!(
        body["triggerRunId"].is_null() || body["triggerRunId"].is_string(),
        "triggerRunId: {body}"
    );
    assert!(
        body["reusedExistingRun"].is_boolean(),
        "reusedExistingRun: {body}"
    );
}

fn assert_nullable_timestamp(v: &Value) {
    if !v.is_null() {
        assert_timestamp(v);
    }
}

/// An Enrichment of the catalog (spec §5).
pub fn assert_enrichment_shape(e: &Value) {
    assert_keys(
        e,
        &[
            "id",
            "slug",
            "name",
            "description",
            "subject",
            "version",
            "enabled",
            "visibility",
            "inputSchema",
            "outputSchema",
            "defaultOutput",
            "defaultOutputAttributeKey",
            "outputOverridePolicy",
            "costModel",
            "toolBinding",
        ],
    );
    assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()), "id: {e}");
    for k in ["slug", "name", "description"] {
        assert!(e[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {e}");
    }
    assert!(
        ["person", "company", "any"].contains(&e["subject"].as_str().unwrap_or("")),
        "subject: {e}"
    );
    assert_eq!(e["version"], "1", "version is the string \"1\": {e}");
    assert!(e["enabled"].is_boolean(), "enabled: {e}");
    assert!(
        ["public", "hidden", "internal"].contains(&e["visibility"].as_str().unwrap_or("")),
        "visibility: {e}"
    );
    assert!(e["inputSchema"].is_object(), "inputSchema: {e}");
    assert!(e["outputSchema"].is_object(), "outputSchema: {e}");
    assert_keys(&e["defaultOutput"], &["target", "attributeKey"]);
    assert!(
        ["lead", "membership"].contains(&e["defaultOutput"]["target"].as_str().unwrap_or("")),
        "defaultOutput.target: {e}"
    );
    assert_eq!(
        e["defaultOutputAttributeKey"], e["defaultOutput"]["attributeKey"],
        "defaultOutputAttributeKey = defaultOutput.attributeKey: {e}"
    );
    assert_keys(
        &e["outputOverridePolicy"],
        &["allowTarget", "allowAttributeKey"],
    );
    assert!(e["outputOverridePolicy"]["allowTarget"].is_boolean(), "{e}");
    assert!(
        e["outputOverridePolicy"]["allowAttributeKey"].is_boolean(),
        "{e}"
    );
    assert_keys(&e["costModel"], &["creditAction"]);
    assert!(e["costModel"]["creditAction"].is_string(), "{e}");
    assert_keys(&e["toolBinding"], &["type", "payloadMapper", "taskId"]);
    assert_keys(&e["toolBinding"]["payloadMapper"], &["id", "version"]);
}

/// A run of `GET /api/enrichment/{id}` (spec §6), with counts that sum to `resolvedCount`.
pub fn assert_run_shape(run: &Value) {
    assert_keys(
        run,
        &[
            "id",
            "status",
            "mode",
            "enrichment",
            "scope",
            "output",
            "cost",
            "trigger",
            "error",
            "timing",
        ],
    );
    assert_id(&run["id"]);
    assert!(
        ["pending", "running", "completed", "failed", "cancelled"]
            .contains(&run["status"].as_str().unwrap_or("")),
        "status: {run}"
    );
    assert!(
        ["persisted", "preview"].contains(&run["mode"].as_str().unwrap_or("")),
        "mode: {run}"
    );
    let e = &run["enrichment"];
    assert_keys(e, &["id", "slug", "version", "snapshot"]);
    assert!(e["slug"].is_string(), "enrichment.slug: {run}");
    assert!(
        e["version"].is_i64() || e["version"].is_u64(),
        "enrichment.version is an integer: {run}"
    );
    let scope = &run["scope"];
    assert_keys(
        scope,
        &["type", "listId", "requested", "resolvedCount", "counts"],
    );
    assert!(
        ["explicit_leads", "list", "filtered_list"].contains(&scope["type"].as_str().unwrap_or("")),
        "scope.type: {run}"
    );
    assert_keys(&scope["counts"], ITEM_STATUSES);
    let resolved = scope["resolvedCount"]
        .as_i64()
        .expect("resolvedCount is an integer");
    let sum: i64 = ITEM_STATUSES
        .iter()
        .map(|s| {
            scope["counts"][*s]
                .as_i64()
                .unwrap_or_else(|| panic!("counts.{s} is an integer: {run}"))
        })
        .sum();
    assert_eq!(sum, resolved, "counts sum to resolvedCount: {run}");
    assert_keys(
        &run["output"],
        &["target", "attributeKey", "writePolicy", "persistResults"],
    );
    assert!(
        ["lead", "membership"].contains(&run["output"]["target"].as_str().unwrap_or("")),
        "output.target: {run}"
    );
    assert!(
        ["overwrite", "fill_empty"].contains(&run["output"]["writePolicy"].as_str().unwrap_or("")),
        "output.writePolicy: {run}"
    );
    assert!(run["output"]["persistResults"].is_boolean(), "{run}");
    assert_keys(&run["cost"], &["preview", "actual"]);
    assert_keys(
        &run["cost"]["preview"],
        &["creditAction", "costPerUnit", "totalCredits"],
    );
    assert_keys(&run["cost"]["actual"], &["totalCredits"]);
    assert_keys(
        &run["trigger"],
        &["correlationId", "triggerRunId", "dispatchMetadata"],
    );
    if !run["error"].is_null() {
        assert_keys(&run["error"], &["message", "details"]);
        assert!(run["error"]["message"].is_string(), "{run}");
    }
    let t = &run["timing"];
    assert_keys(
        t,
        &[
            "startedAt",
            "completedAt",
            "cancelledAt",
            "createdAt",
            "updatedAt",
        ],
    );
    assert_timestamp(&t["createdAt"]);
    assert_timestamp(&t["updatedAt"]);
    for k in ["startedAt", "completedAt", "cancelledAt"] {
        assert_nullable_timestamp(&t[k]);
    }
    let terminal = TERMINAL_RUN_STATUSES.contains(&run["status"].as_str().unwrap());
    assert_eq!(
        t["completedAt"].is_string(),
        terminal,
        "completedAt is set exactly when the run is terminal: {run}"
    );
    assert_eq!(
        t["cancelledAt"].is_string(),
        run["status"] == "cancelled",
        "cancelledAt is set exactly when the run is cancelled: {run}"
    );
}

/// An item of `GET /api/enrichment/{id}/items` (spec §6).
pub fn assert_item_shape(item: &Value) {
    assert_keys(
        item,
        &[
            "id",
            "runId",
            "leadId",
            "listId",
            "membershipId",
            "status",
            "result",
            "skippedReason",
            "error",
            "attempts",
            "metadata",
            "timing",
        ],
    );
    assert_id(&item["id"]);
    assert_id(&item["runId"]);
    assert_id(&item["leadId"]);
    assert_eq!(
        item["listId"].is_null(),
        item["membershipId"].is_null(),
        "listId and membershipId are both set or both null: {item}"
    );
    if !item["listId"].is_null() {
        assert_id(&item["listId"]);
        assert!(item["membershipId"].is_string(), "{item}");
    }
    let status = item["status"].as_str().unwrap_or("");
    assert!(ITEM_STATUSES.contains(&status), "status: {item}");
    if status == "skipped" {
        assert!(
            [
                "run_cancelled",
                "run_failed",
                "missing_input",
                "subject_mismatch",
                "already_has_value",
                "lead_deleted"
            ]
            .contains(&item["skippedReason"].as_str().unwrap_or("")),
            "skippedReason of a skipped item: {item}"
        );
    } else {
        assert!(
            item["skippedReason"].is_null(),
            "skippedReason only on skipped items: {item}"
        );
    }
    if status == "failed" {
        assert_keys(&item["error"], &["message", "details"]);
        assert!(
            item["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "a failed item says why: {item}"
        );
    } else if status == "completed" {
        // Pending, running and skipped items may carry the error of an earlier attempt.
        assert!(
            item["error"].is_null(),
            "no error on a completed item: {item}"
        );
    }
    if status != "completed" {
        assert!(
            item["result"].is_null(),
            "result only on completed items: {item}"
        );
    }
    assert!(
        item["attempts"].as_i64().is_some_and(|a| a >= 0),
        "attempts is a count: {item}"
    );
    assert_keys(
        &item["metadata"],
        &[
            "inputSnapshot",
            "leadSnapshot",
            "result",
            "provider",
            "providerSubmissionId",
        ],
    );
    let t = &item["timing"];
    assert_keys(t, &["startedAt", "completedAt", "createdAt", "updatedAt"]);
    assert_timestamp(&t["createdAt"]);
    assert_timestamp(&t["updatedAt"]);
    assert_nullable_timestamp(&t["startedAt"]);
    assert_nullable_timestamp(&t["completedAt"]);
    let terminal = ["completed", "skipped", "failed"].contains(&status);
    assert_eq!(
        t["completedAt"].is_string(),
        terminal,
        "completedAt is set exactly when the item is terminal: {item}"
    );
}

/// A page of items: `{"items", "page": {limit, nextCursor, hasMore}}` with `page.limit ==
/// limit`, every item well-formed, ascending ids, and `nextCursor` = the last id iff `hasMore`.
pub fn assert_items_page(body: &Value, limit: i64) {
    assert_keys(body, &["items", "page"]);
    assert_keys(&body["page"], &["limit", "nextCursor", "hasMore"]);
    assert_eq!(body["page"]["limit"], limit, "page.limit: {body}");
    let items = body["items"].as_array().expect("items is an array");
    assert!(items.len() as i64 <= limit, "no more than limit items");
    for item in items {
        assert_item_shape(item);
    }
    let item_ids = ids(&body["items"]);
    assert!(
        item_ids.windows(2).all(|w| w[0] < w[1]),
        "items ascending by id: {item_ids:?}"
    );
    let has_more = body["page"]["hasMore"]
        .as_bool()
        .expect("hasMore is a boolean");
    if has_more {
        assert_eq!(
            body["page"]["nextCursor"].as_str(),
            item_ids.last().map(|s| s.as_str()),
            "nextCursor is the last item's id when hasMore"
        );
    } else {
        assert!(
            body["page"]["nextCursor"].is_null(),
            "nextCursor is null without more: {}",
            body["page"]
        );
    }
}

// --- loopback providers -----------------------------------------------------------------------

/// One request a [`Provider`] received.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// 0-based position among every request this provider received.
    pub index: usize,
    /// 0-based position among the requests with this same `target`.
    pub target_index: usize,
    /// When the request was read.
    pub at: std::time::Instant,
}

impl ProviderRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a [`Provider`] answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: std::time::Duration,
}

impl Reply {
    /// `status` with a JSON body.
    pub fn json_status(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: std::time::Duration::ZERO,
        }
    }

    /// `200` with a JSON body.
    pub fn json(body: Value) -> Reply {
        Self::json_status(200, body)
    }

    /// `status` with a small JSON error body.
    pub fn status(status: u16) -> Reply {
        Self::json_status(status, json!({"error": format!("status {status}")}))
    }

    /// `429` with `Retry-After: secs`.
    pub fn retry_after(secs: u64) -> Reply {
        let mut r = Self::status(429);
        r.headers.push(("retry-after".into(), secs.to_string()));
        r
    }

    /// `200` whose body is not UTF-8 at all.
    pub fn binary() -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: vec![0xff, 0xfe, 0x00, 0x9f, 0x92, 0x96],
            delay: std::time::Duration::ZERO,
        }
    }

    /// `200` that says it is JSON but is not.
    pub fn garbage() -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"<html>\x00 not json {{{".to_vec(),
            delay: std::time::Duration::ZERO,
        }
    }

    /// Answer only after `delay`.
    pub fn after(mut self, delay: std::time::Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(&ProviderRequest) -> Reply + Send + Sync;

#[derive(Default)]
struct ProviderLog {
    requests: Vec<ProviderRequest>,
    per_target: std::collections::HashMap<String, usize>,
}

/// A real HTTP/1.1 server on `127.0.0.1:0` that answers with `handler` and records every request
/// (one request per connection, `Connection: close`).
pub struct Provider {
    pub addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<ProviderLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    pub async fn start(
        handler: impl Fn(&ProviderRequest) -> Reply + Send + Sync + 'static,
    ) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("provider binds");
        let addr = listener.local_addr().unwrap();
        let log: std::sync::Arc<std::sync::Mutex<ProviderLog>> = Default::default();
        let handler: std::sync::Arc<Handler> = std::sync::Arc::new(handler);
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (log, handler) = (log.clone(), handler.clone());
                    tokio::spawn(async move {
                        let _ = serve_connection(stream, log, handler).await;
                    });
                }
            })
        };
        Provider { addr, log, task }
    }

    /// A provider that always answers `200` with `body`.
    pub async fn always(body: Value) -> Provider {
        Self::start(move |_| Reply::json(body.clone())).await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().requests.len()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ProviderRequest> {
        self.log.lock().unwrap().requests.clone()
    }

    /// The requests whose path (without query) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<ProviderRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path() == path)
            .collect()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    log: std::sync::Arc<std::sync::Mutex<ProviderLog>>,
    handler: std::sync::Arc<Handler>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let target = request_line.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = buf[head_end..].to_vec();
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        // Read until the terminating zero-length chunk, then decode.
        while !body.windows(5).any(|w| w == b"0\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..i])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .unwrap_or(0);
            rest = &rest[i + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            decoded.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = decoded;
    } else {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while body.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    }
    let request = {
        let mut log = log.lock().unwrap();
        let index = log.requests.len();
        let per = log.per_target.entry(target.clone()).or_insert(0);
        let target_index = *per;
        *per += 1;
        let request = ProviderRequest {
            method,
            target,
            headers,
            body,
            index,
            target_index,
            at: std::time::Instant::now(),
        };
        log.requests.push(request.clone());
        request
    };
    let reply = handler(&request);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut out = format!("HTTP/1.1 {} Status\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        reply.body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&reply.body);
    stream.write_all(&bytes).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Tally items by status.
pub fn count_by_status(items: &[Value]) -> std::collections::BTreeMap<String, i64> {
    let mut out: std::collections::BTreeMap<String, i64> =
        ITEM_STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    for item in items {
        *out.entry(item["status"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    out
}

/// The run's `scope.counts` equal the tally of `items`.
pub fn assert_counts_match(run: &Value, items: &[Value]) {
    let tally = count_by_status(items);
    for s in ITEM_STATUSES {
        assert_eq!(
            run["scope"]["counts"][*s], tally[*s],
            "counts.{s} matches the items: run {}, items {tally:?}",
            run["scope"]["counts"]
        );
    }
    assert_eq!(run["scope"]["resolvedCount"], items.len() as i64);
}

/// A CSV text as its header and rows of column → value.
pub fn parse_csv(text: &str) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a header row")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.expect("a CSV row").iter().map(str::to_string))
                .collect()
        })
        .collect();
    (header, rows)
}

/// What one run of the binary produced.
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        &self.stdout
    }

    /// Assert success and parse stdout as one JSON document.
    pub fn json(&self) -> Value {
        let out = self.ok();
        serde_json::from_str(out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out}"))
    }

    /// Assert an API error: exit 1, nothing on stdout, `error: <code>: …` naming the HTTP status.
    pub fn api_error(&self, code: &str, status: u16) -> &str {
        assert_eq!(
            self.code, 1,
            "stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        assert!(
            self.stdout.is_empty(),
            "errors are not data: {}",
            self.stdout
        );
        assert!(
            self.stderr.starts_with(&format!("error: {code}: ")),
            "{}",
            self.stderr
        );
        assert!(self.stderr.contains(&status.to_string()), "{}", self.stderr);
        &self.stderr
    }
}

/// Run `puffle <args>` (with the app's base URL and key unless `adjust` changes them), feeding
/// `stdin`. Every run checks that the API key shows up in neither stdout nor stderr.
pub async fn run_cli(
    app: &TestApp,
    args: &[&str],
    stdin: Option<&str>,
    adjust: impl FnOnce(&mut std::process::Command),
) -> CliRun {
    use std::io::Write as _;
    let mut cmd = app.cli();
    cmd.args(args);
    adjust(&mut cmd);
    let stdin = stdin.map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        cmd.stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("puffle starts");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(text.as_bytes())
                .expect("stdin written");
        }
        child.wait_with_output().expect("puffle runs")
    })
    .await
    .unwrap();
    let run = CliRun {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    };
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.contains(&app.key),
            "the API key leaked on {name} of puffle {args:?}"
        );
    }
    run
}

/// The value of the Prometheus sample `series` (name and labels, exactly) in `text`, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A `puffle serve` process (started by a test with its own flags and environment) whose log
/// lines on stderr are collected.
pub struct LoggedServe {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    /// `http://127.0.0.1:<port>`, as the process announced it.
    pub base: String,
    /// What it logged before announcing its address.
    pub startup: Vec<String>,
}

impl LoggedServe {
    /// `puffle serve` on a free port with debug logs, a fresh SQLite database in `dir` and `key`
    /// as its bootstrap key: the command the log-reading tests add their own settings to.
    pub fn command(dir: &std::path::Path, key: &str) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_puffle"));
        command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .current_dir(dir)
            .env("PUFFLE_DATABASE_URL", "sqlite://puffle.db")
            .env("PUFFLE_BOOTSTRAP_API_KEY", key)
            .env("PUFFLE_LOG", "debug,sqlx=warn,hyper=warn,reqwest=warn");
        command
    }

    /// Spawn `command` (a `puffle serve --bind 127.0.0.1:0 …`) with stderr piped and wait until it
    /// prints the address it listens on.
    pub fn start(mut command: std::process::Command) -> LoggedServe {
        use std::io::{BufRead, BufReader};
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("puffle serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup = Vec::new();
        let base = loop {
            let line = lines.recv().expect("serve prints its address");
            if let Some(url) = line.strip_prefix("Puffle is listening on ") {
                break url.trim().to_string();
            }
            startup.push(line);
        };
        LoggedServe {
            child,
            lines,
            reader,
            base,
            startup,
        }
    }

    /// Send `method path` with `key` (and a JSON body); the status and the body's text.
    pub async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    /// SIGTERM, wait for the exit; its status and every line logged after startup.
    pub async fn stop(self) -> (std::process::ExitStatus, Vec<String>) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let mut child = self.child;
        let exit = tokio::task::spawn_blocking(move || child.wait().expect("serve exits"))
            .await
            .expect("waiting for serve");
        self.reader.join().expect("reader");
        (exit, self.lines.try_iter().collect())
    }
}

/// The scheduling priority (nice value) of each thread of process `pid`, by thread name
/// (Linux: read from `/proc`).
pub fn thread_priorities(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    for task in tasks.flatten() {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        out.push((comm.trim_end().to_string(), nice_in_stat(&stat)));
    }
    out
}

/// The calling thread's nice value.
pub fn own_priority() -> i64 {
    nice_in_stat(&std::fs::read_to_string("/proc/thread-self/stat").expect("own stat"))
}

/// The nice value in a `/proc/…/stat` line: field 19, the 17th after the parenthesised name.
fn nice_in_stat(stat: &str) -> i64 {
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    after_name
        .split(' ')
        .nth(16)
        .and_then(|n| n.parse().ok())
        .expect("a nice value")
}
