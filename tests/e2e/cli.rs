//! Spec §9: the `puffle` client commands against a real server, run as a user runs them.

use serde_json::{json, Value};

use crate::support::*;

async fn puffle(app: &TestApp, args: &[&str]) -> CliRun {
    run_cli(app, args, None, |_| {}).await
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_create_get_update_delete() {
    let app = TestApp::spawn().await;
    let created = puffle(
        &app,
        &[
            "lead",
            "create",
            "--type",
            "person",
            "--name",
            "Ada Lovelace",
            "--title",
            "Analyst",
            "--company",
            r#"{"name":"Analytical Engines","domain":"engines.example"}"#,
            "--contacts",
            r#"[{"type":"email","value":"ada@engines.example"}]"#,
            "--attributes",
            r#"{"seniority":"senior","score":7}"#,
        ],
    )
    .await
    .json();
    assert_eq!(created["created"], true, "{created}");
    let id = id_of(&created["lead"]);

    // What the CLI created is what the API holds: a plain --name is the full name.
    let got = app.get(&format!("/api/leads?id={id}")).await;
    let lead = &got.body["leads"][0];
    assert_eq!(lead["name"]["full"], "Ada Lovelace", "{}", got.text);
    assert_eq!(lead["title"], "Analyst");
    assert_eq!(lead["company"]["domain"], "engines.example");
    assert_eq!(lead["contacts"][0]["value"], "ada@engines.example");
    assert_eq!(
        lead["attributes"],
        json!({"seniority": "senior", "score": 7})
    );

    // `puffle lead --id` reads it back.
    let listed = puffle(&app, &["lead", "--id", &id]).await.json();
    assert_eq!(ids(&listed["leads"]), [id.as_str()]);
    let searched = puffle(&app, &["lead", "--q", "lovelace"]).await.json();
    assert_eq!(ids(&searched["leads"]), [id.as_str()]);

    // Update sends only the given fields; attributes merge, null removes a key.
    let updated = puffle(
        &app,
        &[
            "lead",
            "update",
            "--id",
            &id,
            "--title",
            "Chief Analyst",
            "--attributes",
            r#"{"seniority":null,"team":"math"}"#,
        ],
    )
    .await
    .json();
    assert_eq!(updated["lead"]["title"], "Chief Analyst", "{updated}");
    let lead = app.get(&format!("/api/leads?id={id}")).await.body["leads"][0].clone();
    assert_eq!(lead["title"], "Chief Analyst");
    assert_eq!(
        lead["name"]["full"], "Ada Lovelace",
        "fields not given are left alone"
    );
    assert_eq!(lead["company"]["name"], "Analytical Engines");
    assert_eq!(lead["attributes"], json!({"score": 7, "team": "math"}));

    let deleted = puffle(&app, &["lead", "delete", "--id", &id]).await.json();
    assert_eq!(deleted, json!({"success": true}));
    let after = app.get(&format!("/api/leads?id={id}")).await;
    assert_eq!(after.body["leads"], json!([]), "{}", after.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_create_add_show_remove_update_delete() {
    let app = TestApp::spawn().await;
    let a = id_of(
        &app.lead(json!({"type": "person", "name": "Grace Hopper"}))
            .await,
    );
    let b = id_of(
        &app.lead(json!({"type": "person", "name": "Alan Turing"}))
            .await,
    );

    let list = puffle(
        &app,
        &[
            "list",
            "create",
            "--name",
            "Prospects",
            "--lead-type",
            "person",
        ],
    )
    .await
    .json();
    assert_eq!(list["list"]["name"], "Prospects", "{list}");
    let list_id = id_of(&list["list"]);

    let ids_json = json!([a, b]).to_string();
    let added = puffle(
        &app,
        &[
            "list",
            "lead",
            "add",
            "--id",
            &list_id,
            "--lead-ids",
            &ids_json,
        ],
    )
    .await
    .json();
    assert_eq!(added["list"]["leadCount"], 2, "{added}");

    let members = puffle(&app, &["list", "lead", "--id", &list_id])
        .await
        .json();
    let mut got = ids(&members["leads"]);
    got.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(got, want, "{members}");
    assert_eq!(members["total"], 2);
    let page = puffle(&app, &["list", "lead", "--id", &list_id, "--limit", "1"])
        .await
        .json();
    assert_eq!(
        page["leads"].as_array().unwrap().len(),
        1,
        "--limit is sent: {page}"
    );
    assert_eq!(page["hasMore"], true);

    let removed = puffle(
        &app,
        &[
            "list",
            "lead",
            "remove",
            "--id",
            &list_id,
            "--lead-ids",
            &json!([a]).to_string(),
        ],
    )
    .await
    .json();
    assert_eq!(removed["list"]["leadCount"], 1, "{removed}");
    let over_http = app.get(&format!("/api/lists/{list_id}/leads")).await;
    assert_eq!(
        ids(&over_http.body["leads"]),
        [b.as_str()],
        "{}",
        over_http.text
    );
    assert_eq!(
        app.get(&format!("/api/leads?id={a}")).await.body["leads"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the lead survives"
    );

    puffle(
        &app,
        &[
            "list",
            "update",
            "--id",
            &list_id,
            "--name",
            "Pioneers",
            "--description",
            "early",
        ],
    )
    .await
    .json();
    let shown = puffle(&app, &["list", "--id", &list_id]).await.json();
    assert_eq!(shown["lists"][0]["name"], "Pioneers", "{shown}");
    assert_eq!(shown["lists"][0]["description"], "early");
    let all = puffle(&app, &["list"]).await.json();
    assert!(ids(&all["lists"]).contains(&list_id), "{all}");

    assert_eq!(
        puffle(&app, &["list", "delete", "--id", &list_id])
            .await
            .json(),
        json!({"success": true})
    );
    let gone = app.get(&format!("/api/lists?id={list_id}")).await;
    assert!(
        gone.status == 404 || gone.body["lists"] == json!([]),
        "the list is gone: {} {}",
        gone.status,
        gone.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_import_preview_then_for_real() {
    let app = TestApp::spawn().await;
    let leads = json!([
        {"type": "person", "name": "Katherine Johnson", "contacts": [{"type": "email", "value": "kj@nasa.example"}]},
        {"type": "company", "name": "Orbital", "domain": "orbital.example"}
    ])
    .to_string();

    let preview = puffle(&app, &["list", "import", "--leads", &leads, "--preview"])
        .await
        .json();
    assert_eq!(
        preview,
        json!({"preview": {"leadCount": 2, "personCount": 1, "companyCount": 1}})
    );
    let none = app.get("/api/leads").await;
    assert_eq!(
        none.body["leads"],
        json!([]),
        "a preview creates nothing: {}",
        none.text
    );

    let list = app
        .post(
            "/api/lists",
            json!({"name": "Imported", "leadType": "mixed"}),
        )
        .await;
    let list_id = id_of(&list.body["list"]);
    let imported = puffle(
        &app,
        &["list", "import", "--leads", &leads, "--list-id", &list_id],
    )
    .await
    .json();
    assert_eq!(imported["created"], 2, "{imported}");
    assert_eq!(imported["reused"], 0);
    assert_eq!(imported["list"]["id"], list_id.as_str());
    let lead_ids: Vec<String> = imported["leadIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(lead_ids.len(), 2);
    let members = app.get(&format!("/api/lists/{list_id}/leads")).await;
    let mut got = ids(&members.body["leads"]);
    got.sort();
    let mut want = lead_ids.clone();
    want.sort();
    assert_eq!(got, want, "{}", members.text);

    // The same leads again are deduplicated into the same ids.
    let again = puffle(&app, &["list", "import", "--leads", &leads])
        .await
        .json();
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["reused"], 2);
    assert_eq!(again["leadIds"], json!(lead_ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_csv_then_export_csv_round_trips_rows() {
    let app = TestApp::spawn().await;
    let list = app.post("/api/lists", json!({"name": "From CSV"})).await;
    let list_id = id_of(&list.body["list"]);
    let file = app.path("people.csv");
    std::fs::write(
        &file,
        "type,name,title,email,score\n\
         person,Ada Lovelace,Analyst,ada@example.com,90\n\
         person,Grace Hopper,Admiral,grace@example.com,85\n\
         person,\"Turing, Alan\",Mathematician,alan@example.com,70\n",
    )
    .unwrap();

    let imported = puffle(
        &app,
        &[
            "list",
            "import-csv",
            "--id",
            &list_id,
            file.to_str().unwrap(),
        ],
    )
    .await
    .json();
    assert_eq!(imported["created"], 3, "{imported}");
    assert_eq!(imported["leadIds"].as_array().unwrap().len(), 3);

    // `-` reads the CSV from stdin.
    let piped = run_cli(
        &app,
        &["list", "import-csv", "--id", &list_id, "-"],
        Some("type,name,title,email,score\nperson,Hedy Lamarr,Inventor,hedy@example.com,95\n"),
        |_| {},
    )
    .await
    .json();
    assert_eq!(piped["created"], 1, "{piped}");

    let export = puffle(&app, &["list", "export-csv", "--id", &list_id]).await;
    let text = export.ok();
    // Streamed to stdout as received: the same bytes the API serves.
    let over_http = app
        .client
        .get(app.url(&format!("/api/lists/{list_id}/export.csv")))
        .bearer_auth(&app.key);
    assert_eq!(text, app.raw(over_http).await.text);

    let (header, rows) = parse_csv(text);
    let score = header
        .iter()
        .find(|h| *h == "score" || h.ends_with(".score"))
        .expect("an attribute column");
    let mut got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].clone(),
                r["title"].clone(),
                r["email"].clone(),
                r[score.as_str()].clone(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("Ada Lovelace", "Analyst", "ada@example.com", "90"),
        ("Grace Hopper", "Admiral", "grace@example.com", "85"),
        ("Hedy Lamarr", "Inventor", "hedy@example.com", "95"),
        ("Turing, Alan", "Mathematician", "alan@example.com", "70"),
    ]
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()));
    assert_eq!(got, want, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_commands_show_prices_balance_and_previews() {
    let app = TestApp::spawn().await;
    let config = puffle(&app, &["credit", "config"]).await.json();
    assert_eq!(config, app.get("/api/credits/config").await.body);
    assert_eq!(config["operations"]["builtin"]["credits"], 0, "{config}");
    assert_eq!(config["operations"]["custom_http"]["credits"], 1);

    let credits = puffle(&app, &["credit"]).await.json();
    assert_eq!(credits["balance"], 1000, "{credits}");
    assert!(credits["ledger"].is_array());

    let preview = puffle(
        &app,
        &[
            "credit",
            "preview",
            "--action",
            "custom_http",
            "--count",
            "3",
        ],
    )
    .await
    .json();
    assert_eq!(preview["totalCredits"], 3, "{preview}");
    assert_eq!(preview["sufficient"], true);

    let account = puffle(&app, &["account"]).await.json();
    assert_eq!(account["user"]["email"], "admin@localhost", "{account}");
    assert_eq!(account["credits"]["balance"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_formats() {
    let app = TestApp::spawn().await;
    app.lead(json!({"type": "person", "name": "Ada Lovelace", "company": {"name": "Engines", "domain": "engines.example"},
        "contacts": [{"type": "email", "value": "ada@engines.example"}]}))
    .await;
    app.lead(json!({"type": "company", "name": "Orbital", "domain": "orbital.example"}))
        .await;
    let api = app.get("/api/leads").await;

    // json (default) and pretty: the body, formatted over several lines.
    for args in [
        &["lead"][..],
        &["lead", "--format", "json"],
        &["lead", "--format", "pretty"],
    ] {
        let run = puffle(&app, args).await;
        assert_eq!(run.json(), api.body, "{args:?}");
        assert!(run.stdout.lines().count() > 10, "formatted: {}", run.stdout);
    }

    // raw: exactly the bytes the API sent; the global flag works after the subcommand too.
    assert_eq!(
        puffle(&app, &["lead", "--format", "raw"]).await.ok(),
        api.text
    );
    let list = puffle(
        &app,
        &["list", "create", "--name", "Raw", "--format", "raw"],
    )
    .await;
    assert!(
        list.ok().starts_with('{') && !list.stdout.contains("\n  "),
        "compact as sent: {}",
        list.stdout
    );

    // csv: one row per lead, nested objects as dotted columns, arrays as compact JSON.
    let (header, rows) = parse_csv(puffle(&app, &["lead", "--format", "csv"]).await.ok());
    for column in ["id", "type", "name.full", "company.domain", "contacts"] {
        assert!(
            header.contains(&column.to_string()),
            "no {column} column: {header:?}"
        );
    }
    assert_eq!(rows.len(), 2);
    let ada = rows
        .iter()
        .find(|r| r["name.full"] == "Ada Lovelace")
        .expect("Ada's row");
    assert_eq!(ada["company.domain"], "engines.example");
    assert_eq!(ada["id"], api.body["leads"][0]["id"].as_str().unwrap());
    let contacts: Value = serde_json::from_str(&ada["contacts"]).expect("arrays are JSON");
    assert_eq!(contacts, api.body["leads"][0]["contacts"]);
    let orbital = rows
        .iter()
        .find(|r| r["name.full"] == "Orbital")
        .expect("Orbital's row");
    assert_eq!(orbital["type"], "company");

    // table: a header line, then one line per lead.
    let table = puffle(&app, &["lead", "--format", "table"]).await;
    let lines: Vec<&str> = table.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(
        lines[0].starts_with("id ") && lines[0].contains("name.full"),
        "{}",
        lines[0]
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("Ada Lovelace") && l.contains("engines.example")));
    assert!(lines.iter().any(|l| l.contains("Orbital")));

    // A response without a list of objects falls back to JSON.
    let account = puffle(&app, &["account", "--format", "table"]).await.json();
    assert_eq!(account["user"]["email"], "admin@localhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_exit_1_with_code_and_status() {
    let app = TestApp::spawn().await;
    let unknown = "01890000-0000-7000-8000-000000000000";
    let run = puffle(&app, &["lead", "delete", "--id", unknown]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "errors are not data: {}", run.stdout);
    assert!(
        run.stderr.starts_with("error: not_found: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("404"), "{}", run.stderr);

    // A wrong key is the API's 401, and that key is not printed either.
    let wrong = format!("pk_live_{}", "ab".repeat(32));
    let run = run_cli(&app, &["account"], None, |c| {
        c.env("PUFFLE_API_KEY", &wrong);
    })
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("unauthorized") && run.stderr.contains("401"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&wrong) && !run.stdout.contains(&wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_before_any_request() {
    let app = TestApp::spawn().await;
    let list = app.post("/api/lists", json!({"name": "Untouched"})).await;
    let list_id = id_of(&list.body["list"]);

    for bad in ["[not json", r#"{"a":1}"#] {
        let run = puffle(
            &app,
            &["list", "lead", "add", "--id", &list_id, "--lead-ids", bad],
        )
        .await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains("--lead-ids"),
            "the message names the flag: {}",
            run.stderr
        );
    }
    let run = puffle(
        &app,
        &["lead", "create", "--type", "person", "--company", "{broken"],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--company"), "{}", run.stderr);
    assert_eq!(
        app.get("/api/leads").await.body["leads"],
        json!([]),
        "nothing was sent"
    );

    let run = run_cli(&app, &["lead"], None, |c| {
        c.env_remove("PUFFLE_API_KEY");
    })
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("PUFFLE_API_KEY"),
        "says what is missing: {}",
        run.stderr
    );
    assert!(run.stdout.is_empty());

    let run = puffle(&app, &["lead", "--limit", "many"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = puffle(
        &app,
        &["list", "import-csv", "--id", &list_id, "no-such-file.csv"],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no-such-file.csv"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_exits_1_naming_the_url() {
    let app = TestApp::spawn().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let run = run_cli(&app, &["credit", "config"], None, |c| {
        c.env("PUFFLE_API_BASE_URL", format!("{base}/"));
    })
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("{base}/api/credits/config")),
        "{}",
        run.stderr
    );

    // --base-url overrides the environment (and a trailing slash is fine).
    let run = run_cli(
        &app,
        &[
            "credit",
            "config",
            "--base-url",
            &format!("{}/", app.base_url),
        ],
        None,
        |c| {
            c.env("PUFFLE_API_BASE_URL", &base);
        },
    )
    .await;
    assert_eq!(run.json()["operations"]["builtin"]["credits"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_flag_and_hides_the_key() {
    let app = TestApp::spawn().await;
    let cases: &[(&[&str], &[&str])] = &[
        (&["lead"], &["--q", "--cursor", "--role", "--format"]),
        (
            &["lead", "create"],
            &[
                "--type",
                "--name",
                "--socials",
                "--attributes",
                "--list-ids",
            ],
        ),
        (&["lead", "update"], &["--id", "--title", "--attributes"]),
        (&["lead", "delete"], &["--id"]),
        (&["list"], &["--id"]),
        (
            &["list", "create"],
            &["--name", "--description", "--lead-type", "--lead-ids"],
        ),
        (&["list", "update"], &["--id", "--lead-type"]),
        (&["list", "delete"], &["--id"]),
        (
            &["list", "lead"],
            &["--id", "--limit", "--cursor", "--type"],
        ),
        (&["list", "lead", "add"], &["--id", "--lead-ids"]),
        (&["list", "lead", "remove"], &["--id", "--lead-ids"]),
        (&["list", "import"], &["--leads", "--list-id", "--preview"]),
        (&["list", "import-csv"], &["--id", "<FILE>"]),
        (&["list", "export-csv"], &["--id"]),
        (&["credit"], &["config", "preview"]),
        (&["credit", "config"], &["--api-key", "--base-url"]),
        (&["credit", "preview"], &["--action", "--count"]),
        (&["account"], &["--format"]),
    ];
    for (command, flags) in cases {
        let mut args = command.to_vec();
        args.push("--help");
        let help = puffle(&app, &args).await;
        let text = help.ok();
        assert!(text.contains("Usage: puffle"), "{args:?}: {text}");
        let summary = text.lines().next().unwrap_or_default();
        assert!(
            !summary.is_empty() && !summary.starts_with("Usage"),
            "{args:?} has a summary: {text}"
        );
        for flag in *flags {
            assert!(text.contains(flag), "{args:?} help lacks {flag}: {text}");
        }
    }
}
