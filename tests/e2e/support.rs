//! The test harness: start a real server on a free port with a fresh database, talk to it.

#![allow(dead_code)]

use std::path::PathBuf;

use puffle_server::{Config, Running};
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
        let database_url = format!("sqlite://{}", dir.path().join("puffle.db").display());
        let mut config = Config::new("127.0.0.1:0", database_url.clone());
        adjust(&mut config);
        let server = puffle_server::start(config).await.expect("server starts");
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
