//! Spec §9: the `puffle enrichment` commands against a real server, run as a user runs them:
//! the catalog, create, wait, status, results (one page, `--all`, csv, table) and cancel. The
//! subject is the built-in `company_domain` (instant, offline, free).

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;

use serde_json::{json, Value};

use crate::support::*;

async fn puffle(app: &TestApp, args: &[&str]) -> CliRun {
    run_cli(app, args, None, |_| {}).await
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

/// Import leads over HTTP (500 at most per call); their ids in order.
async fn import(app: &TestApp, leads: Vec<Value>) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in leads.chunks(500) {
        let r = app.post("/api/lists/import", json!({"leads": chunk})).await;
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

/// `n` companies `{prefix}{i}` with the domain `{prefix}{i}.example`.
async fn companies(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let leads = (0..n)
        .map(|i| json!({"type": "company", "name": format!("{prefix}{i}"), "domain": format!("{prefix}{i}.example")}))
        .collect();
    import(app, leads).await
}

fn explicit(lead_ids: &[String]) -> String {
    json!({"type": "explicit_leads", "leadIds": lead_ids}).to_string()
}

/// `puffle enrichment create` of `company_domain` over these leads; the run id.
async fn create(app: &TestApp, lead_ids: &[String], extra: &[&str]) -> String {
    let scope = explicit(lead_ids);
    let mut args = vec![
        "enrichment",
        "create",
        "--enrichment-id",
        "company_domain",
        "--scope",
        &scope,
    ];
    args.extend(extra);
    let created = puffle(app, &args).await.json();
    assert_eq!(created["leadCount"], lead_ids.len(), "{created}");
    str_of(&created, "enrichmentRunId").to_string()
}

/// `puffle enrichment wait` until the run ends; asserts it completed and returns the run.
async fn wait_completed(app: &TestApp, run_id: &str) -> Value {
    let waited = puffle(
        app,
        &["enrichment", "wait", "--id", run_id, "--interval-ms", "100"],
    )
    .await;
    let body = waited.json();
    assert_eq!(body["run"]["status"], "completed", "{body}");
    body["run"].clone()
}

/// Every item of the run over HTTP, in order.
async fn items_over_http(app: &TestApp, run_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = format!("/api/enrichment/{run_id}/items?limit=100");
    loop {
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "items: {}", r.text);
        out.extend(r.body["items"].as_array().expect("items").iter().cloned());
        match r.body["page"]["nextCursor"].as_str() {
            Some(c) => path = format!("/api/enrichment/{run_id}/items?limit=100&cursor={c}"),
            None => return out,
        }
    }
}

/// NDJSON: one JSON object per line, nothing else.
fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line is not JSON ({e}): {line:?}"));
            assert!(v.is_object(), "one object per line: {line}");
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_finds_and_names_unknown_slugs() {
    let app = TestApp::spawn().await;
    let api = app.get("/api/enrichments").await;
    assert_eq!(api.status, 200, "{}", api.text);

    let all = puffle(&app, &["enrichment"]).await.json();
    assert_eq!(all, api.body, "the catalog as the API serves it");
    let slugs: Vec<&str> = all["enrichments"]
        .as_array()
        .expect("enrichments")
        .iter()
        .map(|e| str_of(e, "slug"))
        .collect();
    assert!(slugs.contains(&"company_domain"), "{slugs:?}");
    assert_eq!(
        puffle(&app, &["enrichment", "--format", "raw"]).await.ok(),
        api.text,
        "raw is the body as received"
    );

    let one = puffle(&app, &["enrichment", "--id", "company_domain"])
        .await
        .json();
    let one = one["enrichments"].as_array().expect("enrichments");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["slug"], "company_domain");
    assert_eq!(one[0]["costModel"]["creditAction"], "builtin");

    let found = puffle(&app, &["enrichment", "--q", "DOMAIN"]).await.json();
    let found = found["enrichments"].as_array().expect("enrichments");
    assert!(
        found.iter().any(|e| e["slug"] == "company_domain"),
        "{found:?}"
    );
    for e in found {
        let text = format!("{} {} {}", e["slug"], e["name"], e["description"]).to_lowercase();
        assert!(text.contains("domain"), "--q filters: {e}");
    }

    puffle(&app, &["enrichment", "--id", "no_such_enrichment"])
        .await
        .api_error("not_found", 404);

    // The catalog's flags do not mix with a subcommand's.
    let run = puffle(
        &app,
        &["enrichment", "--q", "x", "status", "--id", &unknown_id()],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_status_and_results_of_company_domain() {
    let app = TestApp::spawn().await;
    let acme = str_of(
        &app.lead(json!({"type": "company", "name": "Acme", "domain": "acme.example"}))
            .await,
        "id",
    )
    .to_string();
    let globex = str_of(
        &app.lead(json!({"type": "person", "name": "Hank Scorpio",
            "company": {"name": "Globex", "domain": "globex.example"}}))
            .await,
        "id",
    )
    .to_string();
    let initech = str_of(
        &app.lead(json!({"type": "person", "name": "Peter Gibbons",
            "contacts": [{"type": "email", "value": "peter@initech.example"}]}))
            .await,
        "id",
    )
    .to_string();
    let leads = [acme.clone(), globex.clone(), initech.clone()];
    let scope = explicit(&leads);

    let created = puffle(
        &app,
        &[
            "enrichment",
            "create",
            "--enrichment-id",
            "company_domain",
            "--scope",
            &scope,
            "--idempotency-key",
            "cli-test-1",
        ],
    )
    .await
    .json();
    let run_id = str_of(&created, "enrichmentRunId").to_string();
    assert_eq!(created["runId"], run_id.as_str(), "{created}");
    assert_eq!(created["leadCount"], 3);
    assert_eq!(created["reusedExistingRun"], false);

    // The idempotency key reaches the API: the same request again is the same run.
    let again = puffle(
        &app,
        &[
            "enrichment",
            "create",
            "--enrichment-id",
            "company_domain",
            "--scope",
            &scope,
            "--idempotency-key",
            "cli-test-1",
        ],
    )
    .await
    .json();
    assert_eq!(again["enrichmentRunId"], run_id.as_str(), "{again}");
    assert_eq!(again["reusedExistingRun"], true);

    // wait: exit 0, the final run on stdout, one summary line on stderr and, stderr not being
    // a terminal, no progress bar.
    let waited = puffle(
        &app,
        &[
            "enrichment",
            "wait",
            "--id",
            &run_id,
            "--interval-ms",
            "100",
        ],
    )
    .await;
    let run = waited.json()["run"].clone();
    assert_eq!(run["id"], run_id.as_str(), "{run}");
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["scope"]["resolvedCount"], 3);
    assert_eq!(run["scope"]["counts"]["completed"], 3, "{run}");
    let summary: Vec<&str> = waited.stderr.lines().collect();
    assert_eq!(summary.len(), 1, "one summary line: {:?}", waited.stderr);
    assert!(
        summary[0].contains(&run_id) && summary[0].contains("completed"),
        "{}",
        summary[0]
    );
    assert!(summary[0].contains("3/3"), "done/total: {}", summary[0]);
    assert!(
        !waited.stderr.contains(['\r', '\u{1b}']),
        "no bar drawn when stderr is not a terminal: {:?}",
        waited.stderr
    );

    // status and results are the API's answers.
    let status = puffle(&app, &["enrichment", "status", "--id", &run_id])
        .await
        .json();
    assert_eq!(
        status,
        app.get(&format!("/api/enrichment/{run_id}")).await.body
    );
    assert_eq!(status["run"]["status"], "completed");
    let results = puffle(&app, &["enrichment", "results", "--id", &run_id])
        .await
        .json();
    assert_eq!(
        results,
        app.get(&format!("/api/enrichment/{run_id}/items"))
            .await
            .body
    );
    let by_lead: BTreeMap<&str, &Value> = results["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| (str_of(item, "leadId"), &item["result"]))
        .collect();
    assert_eq!(by_lead[acme.as_str()], &json!({"domain": "acme.example"}));
    assert_eq!(
        by_lead[globex.as_str()],
        &json!({"domain": "globex.example"})
    );
    assert_eq!(
        by_lead[initech.as_str()],
        &json!({"domain": "initech.example"})
    );

    // A persisted run (the default mode) wrote the result onto the lead.
    let lead = puffle(&app, &["lead", "--id", &acme]).await.json();
    assert_eq!(
        lead["leads"][0]["attributes"]["company_domain"],
        json!({"domain": "acme.example"}),
        "{lead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sends_mode_and_write_policy() {
    let app = TestApp::spawn().await;
    let leads = companies(&app, "pre", 2).await;

    // preview: the results show on the items, nothing is written to the leads.
    let preview = create(&app, &leads, &["--mode", "preview"]).await;
    let run = wait_completed(&app, &preview).await;
    assert_eq!(run["mode"], "preview", "{run}");
    assert_eq!(run["output"]["persistResults"], false, "{run}");
    let items = items_over_http(&app, &preview).await;
    assert!(
        items.iter().all(|i| i["result"]["domain"].is_string()),
        "{items:?}"
    );
    let lead = app.get_lead(&leads[0]).await.expect("the lead");
    assert!(
        lead["attributes"]
            .get("company_domain")
            .is_none_or(Value::is_null),
        "a preview writes nothing: {lead}"
    );

    // fill_empty: a lead whose attribute already holds a value is skipped.
    let persisted = create(&app, &leads[..1], &[]).await;
    wait_completed(&app, &persisted).await;
    let fill = create(&app, &leads, &["--write-policy", "fill_empty"]).await;
    let run = wait_completed(&app, &fill).await;
    assert_eq!(run["output"]["writePolicy"], "fill_empty", "{run}");
    let items = items_over_http(&app, &fill).await;
    let skipped: Vec<&Value> = items.iter().filter(|i| i["status"] == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{items:?}");
    assert_eq!(skipped[0]["leadId"], leads[0].as_str());
    assert_eq!(skipped[0]["skippedReason"], "already_has_value");

    // Flags the API would refuse anyway are refused before any request (exit 2, naming them).
    let scope = explicit(&leads);
    for (flag, bad) in [
        ("--scope", "[1, 2]"),
        ("--scope", "{broken"),
        ("--mode", "dry_run"),
        ("--write-policy", "append"),
        ("--input", "\"text\""),
    ] {
        let mut args = vec!["enrichment", "create", "--enrichment-id", "company_domain"];
        if flag != "--scope" {
            args.extend(["--scope", scope.as_str()]);
        }
        args.extend([flag, bad]);
        let run = puffle(&app, &args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(flag), "names {flag}: {}", run.stderr);
    }
    let run = puffle(
        &app,
        &["enrichment", "create", "--enrichment-id", "company_domain"],
    )
    .await;
    assert_eq!(run.code, 2, "--scope is required: {}", run.stderr);

    // The API's refusals come back as its code and message (exit 1).
    let run = puffle(
        &app,
        &[
            "enrichment",
            "create",
            "--enrichment-id",
            "no_such_enrichment",
            "--scope",
            &scope,
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: not_found: ")
            || run.stderr.starts_with("error: invalid_request: "),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_all_follows_every_page_as_ndjson() {
    let app = TestApp::spawn().await;
    let mut leads = companies(&app, "page", 5).await;
    leads.extend(
        import(
            &app,
            vec![
                json!({"type": "company", "name": "No Domain One"}),
                json!({"type": "company", "name": "No Domain Two"}),
            ],
        )
        .await,
    );
    let run_id = create(&app, &leads, &[]).await;
    wait_completed(&app, &run_id).await;
    let over_http = items_over_http(&app, &run_id).await;
    assert_eq!(over_http.len(), 7);

    // Pages of 3: three requests, seven lines, in order, each item once, as the API has them.
    for limit in [&["--limit", "3"][..], &[]] {
        let mut args = vec!["enrichment", "results", "--id", &run_id, "--all"];
        args.extend(limit);
        let lines = ndjson(puffle(&app, &args).await.ok());
        assert_eq!(lines, over_http, "{args:?}");
    }
    let ids: Vec<&str> = over_http.iter().map(|i| str_of(i, "id")).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ascending, no repeats");

    // Filters apply to every page.
    let skipped = ndjson(
        puffle(
            &app,
            &[
                "enrichment",
                "results",
                "--id",
                &run_id,
                "--all",
                "--limit",
                "1",
                "--status",
                "skipped",
            ],
        )
        .await
        .ok(),
    );
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped
        .iter()
        .all(|i| i["status"] == "skipped" && i["skippedReason"] == "missing_input"));
    let one = ndjson(
        puffle(
            &app,
            &[
                "enrichment",
                "results",
                "--id",
                &run_id,
                "--all",
                "--lead-id",
                &leads[2],
            ],
        )
        .await
        .ok(),
    );
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["leadId"], leads[2].as_str());

    // --all starts after --cursor.
    let rest = ndjson(
        puffle(
            &app,
            &[
                "enrichment",
                "results",
                "--id",
                &run_id,
                "--all",
                "--cursor",
                ids[3],
                "--limit",
                "2",
            ],
        )
        .await
        .ok(),
    );
    assert_eq!(rest, over_http[4..]);

    // Without --all: one page, as the API sends it, with the cursor to the next.
    let page = puffle(
        &app,
        &["enrichment", "results", "--id", &run_id, "--limit", "3"],
    )
    .await
    .json();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3), "{page}");
    assert_eq!(page["page"]["hasMore"], true);
    assert_eq!(page["page"]["nextCursor"], ids[2]);
    let next = puffle(
        &app,
        &[
            "enrichment",
            "results",
            "--id",
            &run_id,
            "--limit",
            "3",
            "--cursor",
            ids[2],
        ],
    )
    .await
    .json();
    assert_eq!(next["items"][0]["id"], ids[3], "{next}");

    // The API's 400 for a bad filter comes through.
    puffle(
        &app,
        &[
            "enrichment",
            "results",
            "--id",
            &run_id,
            "--all",
            "--limit",
            "0",
        ],
    )
    .await
    .api_error("invalid_request", 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_as_csv_and_table_one_row_per_item() {
    let app = TestApp::spawn().await;
    let mut leads = companies(&app, "row", 4).await;
    leads.extend(
        import(
            &app,
            vec![json!({"type": "company", "name": "Nowhere Inc"})],
        )
        .await,
    );
    let run_id = create(&app, &leads, &[]).await;
    wait_completed(&app, &run_id).await;
    let items = items_over_http(&app, &run_id).await;
    let by_id: HashMap<&str, &Value> = items.iter().map(|i| (str_of(i, "id"), i)).collect();

    // csv: one page, then every page with --all (one header, however many pages).
    for args in [
        &["enrichment", "results", "--id", &run_id, "--format", "csv"][..],
        &[
            "enrichment",
            "results",
            "--id",
            &run_id,
            "--all",
            "--limit",
            "2",
            "--format",
            "csv",
        ],
    ] {
        let out = puffle(&app, args).await;
        let text = out.ok();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("id,")).count(),
            1,
            "one header: {text}"
        );
        let (header, rows) = parse_csv(text);
        for column in [
            "id",
            "leadId",
            "status",
            "attempts",
            "skippedReason",
            "error.message",
            "result",
        ] {
            assert!(header.iter().any(|h| h == column), "{column}: {header:?}");
        }
        assert_eq!(rows.len(), 5, "{text}");
        for row in &rows {
            let item = by_id[row["id"].as_str()];
            assert_eq!(row["leadId"], str_of(item, "leadId"));
            assert_eq!(row["status"], str_of(item, "status"));
            assert_eq!(row["attempts"], item["attempts"].to_string());
            if item["status"] == "completed" {
                let result: Value = serde_json::from_str(&row["result"]).expect("result is JSON");
                assert_eq!(result, item["result"]);
                assert_eq!(row["skippedReason"], "");
            } else {
                assert_eq!(row["status"], "skipped", "{row:?}");
                assert_eq!(row["skippedReason"], "missing_input");
                assert_eq!(row["result"], "", "no result is an empty cell");
                assert_eq!(row["attempts"], "0", "a skip is not an attempt");
            }
        }
    }

    // table: a header line, then one line per item, across pages too.
    for args in [
        &[
            "enrichment",
            "results",
            "--id",
            &run_id,
            "--format",
            "table",
        ][..],
        &[
            "enrichment",
            "results",
            "--id",
            &run_id,
            "--all",
            "--limit",
            "2",
            "--format",
            "table",
        ],
    ] {
        let out = puffle(&app, args).await;
        let lines: Vec<&str> = out.ok().lines().collect();
        assert_eq!(lines.len(), 6, "{}", out.stdout);
        assert!(
            lines[0].starts_with("id ")
                && lines[0].contains("status")
                && lines[0].contains("result"),
            "{}",
            lines[0]
        );
        let status_at = lines[0].find("status").unwrap();
        for item in &items {
            let line = lines
                .iter()
                .find(|l| l.starts_with(str_of(item, "id")))
                .unwrap_or_else(|| panic!("no line for {item}"));
            assert_eq!(
                &line[status_at..status_at + str_of(item, "status").len()],
                str_of(item, "status"),
                "columns line up: {line}"
            );
        }
        assert!(lines
            .iter()
            .any(|l| l.contains("missing_input") && l.contains("skipped")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_finished_run_and_unknown_runs_are_api_errors() {
    let app = TestApp::spawn().await;
    let leads = companies(&app, "done", 2).await;
    let run_id = create(&app, &leads, &[]).await;
    wait_completed(&app, &run_id).await;

    let refused = puffle(&app, &["enrichment", "cancel", "--id", &run_id]).await;
    let stderr = refused.api_error("conflict", 409);
    assert!(
        stderr.contains("run_not_cancellable"),
        "the reason is printed: {stderr}"
    );
    assert_eq!(
        app.get(&format!("/api/enrichment/{run_id}")).await.body["run"]["status"],
        "completed",
        "nothing changed"
    );

    let unknown = unknown_id();
    for sub in ["status", "results", "cancel", "wait"] {
        puffle(&app, &["enrichment", sub, "--id", &unknown])
            .await
            .api_error("not_found", 404);
    }
    puffle(
        &app,
        &[
            "enrichment",
            "results",
            "--id",
            &unknown,
            "--all",
            "--format",
            "csv",
        ],
    )
    .await
    .api_error("not_found", 404);

    let run = puffle(
        &app,
        &["enrichment", "wait", "--id", &run_id, "--interval-ms", "5"],
    )
    .await;
    assert_eq!(run.code, 2, "a busy loop is refused: {}", run.stderr);
    assert!(run.stderr.contains("--interval-ms"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_polls_a_pending_run_until_it_is_cancelled_then_exits_1() {
    // No worker: the run stays pending until cancelled.
    let app = TestApp::spawn_with(|c| c.run_worker = false).await;
    let leads = companies(&app, "held", 3).await;
    let run_id = create(&app, &leads, &[]).await;

    let mut cmd = app.cli();
    cmd.args([
        "enrichment",
        "wait",
        "--id",
        &run_id,
        "--interval-ms",
        "100",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let waiter = tokio::task::spawn_blocking(move || cmd.output().expect("puffle runs"));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(!waiter.is_finished(), "wait returns only once the run ends");
    assert_eq!(
        app.get(&format!("/api/enrichment/{run_id}")).await.body["run"]["status"],
        "pending"
    );

    let cancelled = puffle(&app, &["enrichment", "cancel", "--id", &run_id])
        .await
        .json();
    assert_eq!(cancelled["run"]["id"], run_id.as_str(), "{cancelled}");
    assert_eq!(cancelled["run"]["status"], "cancelled");
    assert!(cancelled["run"]["cancelledAt"].is_string(), "{cancelled}");

    let output = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
        .await
        .expect("wait notices the cancellation")
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stdout.contains(&app.key) && !stderr.contains(&app.key));
    assert_eq!(
        output.status.code(),
        Some(1),
        "cancelled is exit 1: {stderr}"
    );
    let run: Value = serde_json::from_str(&stdout).expect("the final run on stdout");
    assert_eq!(run["run"]["status"], "cancelled", "{run}");
    assert_eq!(run["run"]["scope"]["counts"]["skipped"], 3, "{run}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {stderr:?}");
    assert!(
        lines[0].contains(&run_id) && lines[0].contains("cancelled"),
        "{stderr}"
    );

    // Waiting on a run that already ended answers at once, with the same exit status.
    let again = puffle(&app, &["enrichment", "wait", "--id", &run_id]).await;
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("cancelled"), "{}", again.stderr);

    let items = ndjson(
        puffle(&app, &["enrichment", "results", "--id", &run_id, "--all"])
            .await
            .ok(),
    );
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|i| i["status"] == "skipped" && i["skippedReason"] == "run_cancelled"),
        "{items:?}"
    );
    puffle(&app, &["enrichment", "cancel", "--id", &run_id])
        .await
        .api_error("conflict", 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_enrichment_flag() {
    let app = TestApp::spawn().await;
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["enrichment"],
            &[
                "--id", "--q", "create", "status", "results", "cancel", "wait", "--format",
            ],
        ),
        (
            &["enrichment", "create"],
            &[
                "--enrichment-id",
                "--scope",
                "--mode",
                "--input",
                "--output",
                "--display-request",
                "--idempotency-key",
                "--write-policy",
            ],
        ),
        (&["enrichment", "status"], &["--id"]),
        (
            &["enrichment", "results"],
            &[
                "--id",
                "--status",
                "--lead-id",
                "--cursor",
                "--limit",
                "--all",
            ],
        ),
        (&["enrichment", "cancel"], &["--id"]),
        (&["enrichment", "wait"], &["--id", "--interval-ms"]),
    ];
    for (command, flags) in cases {
        let mut args = command.to_vec();
        args.push("--help");
        let help = puffle(&app, &args).await;
        let text = help.ok();
        assert!(text.contains("Usage: puffle"), "{args:?}: {text}");
        for flag in *flags {
            assert!(text.contains(flag), "{args:?} help lacks {flag}: {text}");
        }
    }
}
