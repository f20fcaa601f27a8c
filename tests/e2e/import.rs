//! Spec §4: `POST /api/lists/import`, CSV import and export.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

const CSV_COLUMNS: &str = "type,name,first_name,last_name,title,company,domain,email,linkedin_url,phone,location,industry";

async fn import(app: &TestApp, body: Value) -> Resp {
    app.post("/api/lists/import", body).await
}

fn assert_import_shape(r: &Resp) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["list", "leadIds", "created", "reused"]);
    assert!(r.body["leadIds"].is_array(), "{}", r.text);
    assert!(
        r.body["created"].is_u64() && r.body["reused"].is_u64(),
        "{}",
        r.text
    );
    if !r.body["list"].is_null() {
        assert_list_shape(&r.body["list"]);
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().expect("an id string").to_string())
        .collect()
}

async fn import_csv(app: &TestApp, list_id: &str, csv: impl Into<String>) -> Resp {
    app.send_text(
        &app.key,
        Method::POST,
        &format!("/api/lists/{list_id}/import.csv"),
        "text/csv",
        csv,
    )
    .await
}

/// The column holding attribute `key` (named `key`, or `<prefix>.key`).
fn attribute_column<'a>(header: &'a [String], key: &str) -> &'a str {
    header
        .iter()
        .find(|h| *h == key || h.ends_with(&format!(".{key}")))
        .unwrap_or_else(|| panic!("no column for attribute {key}: {header:?}"))
}

// --- JSON import ------------------------------------------------------------------------------

#[tokio::test]
async fn preview_counts_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let r = import(
        &app,
        json!({"preview": true, "leads": [
            {"type": "person", "name": "P One"},
            {"type": "person", "name": "P Two"},
            {"type": "company", "name": "C One", "domain": "c1.example"}
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_keys(&r.body, &["preview"]);
    assert_eq!(
        r.body["preview"],
        json!({"leadCount": 3, "personCount": 2, "companyCount": 1})
    );
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "a preview creates nothing"
    );
}

#[tokio::test]
async fn import_without_list_returns_ids_in_input_order() {
    let app = TestApp::spawn().await;
    let r = import(
        &app,
        json!({"leads": [
            {"type": "person", "name": "First Row"},
            {"type": "company", "name": "Second Row", "domain": "second.example"},
            {"type": "person", "name": "Third Row", "title": "CEO"}
        ]}),
    )
    .await;
    assert_import_shape(&r);
    assert_eq!(r.body["list"], Value::Null);
    assert_eq!(r.body["created"], 3);
    assert_eq!(r.body["reused"], 0);
    let lead_ids = strings(&r.body["leadIds"]);
    assert_eq!(lead_ids.len(), 3);
    for (id, name) in lead_ids
        .iter()
        .zip(["First Row", "Second Row", "Third Row"])
    {
        assert_id(&json!(id));
        let lead = app.get_lead(id).await.expect("imported lead exists");
        assert_lead_shape(&lead);
        assert_eq!(lead["name"]["full"], name);
    }
    assert_eq!(app.get_lead(&lead_ids[2]).await.unwrap()["title"], "CEO");
    assert_eq!(app.all_list_as(&app.key).await["leadCount"], 3);
}

#[tokio::test]
async fn import_into_a_list() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "Imported", "leadType": "mixed"}))
        .await;
    let r = import(
        &app,
        json!({"listId": list["id"], "leads": [
            {"type": "person", "name": "In One", "attributes": {"src": "import"}},
            {"type": "company", "name": "In Two", "domain": "in2.example"}
        ]}),
    )
    .await;
    assert_import_shape(&r);
    assert_eq!(r.body["list"]["id"], list["id"]);
    assert_eq!(r.body["list"]["leadCount"], 2);
    assert_eq!(r.body["list"]["personCount"], 1);
    assert_eq!(r.body["list"]["companyCount"], 1);
    let members = app
        .get(&format!(
            "/api/lists/{}/leads",
            list["id"].as_str().unwrap()
        ))
        .await;
    let mut got = ids(&members.body["leads"]);
    got.sort();
    let mut want = strings(&r.body["leadIds"]);
    want.sort();
    assert_eq!(got, want);
    let first = app.get_lead(&strings(&r.body["leadIds"])[0]).await.unwrap();
    assert_eq!(first["attributes"], json!({"src": "import"}));
}

#[tokio::test]
async fn import_dedupes_against_existing_leads_and_within_itself() {
    let app = TestApp::spawn().await;
    let existing = app
        .lead(json!({"type": "person", "name": "Old Timer", "contacts": [{"type": "email", "value": "old@example.com"}]}))
        .await;
    let r = import(
        &app,
        json!({"leads": [
            {"type": "person", "name": "Old Timer Again", "title": "Filled",
             "contacts": [{"type": "email", "value": "OLD@example.com"}]},
            {"type": "person", "name": "New Face", "socials": [{"url": "https://linkedin.com/in/new-face"}]},
            {"type": "person", "name": "New Face Twice", "industry": "Music",
             "socials": [{"url": "https://www.linkedin.com/in/new-face/"}]},
            {"type": "company", "name": "Co", "domain": "co.example"},
            {"type": "company", "name": "Co Again", "domain": "WWW.CO.EXAMPLE"}
        ]}),
    )
    .await;
    assert_import_shape(&r);
    let lead_ids = strings(&r.body["leadIds"]);
    assert_eq!(lead_ids.len(), 5, "one id per input row");
    assert_eq!(lead_ids[0], existing["id"].as_str().unwrap());
    assert_eq!(lead_ids[1], lead_ids[2], "rows 1 and 2 are one lead");
    assert_eq!(lead_ids[3], lead_ids[4], "rows 3 and 4 are one company");
    assert_ne!(lead_ids[1], lead_ids[3]);
    assert_eq!(r.body["created"], 2, "two new leads");
    assert_eq!(r.body["reused"], 3, "every other row reused a lead");
    assert_eq!(app.all_leads_as(&app.key).await.len(), 3);
    let old = app.get_lead(&lead_ids[0]).await.unwrap();
    assert_eq!(
        old["name"]["full"], "Old Timer",
        "set fields are not overwritten"
    );
    assert_eq!(old["title"], "Filled", "empty fields are filled");
    let face = app.get_lead(&lead_ids[1]).await.unwrap();
    assert_eq!(face["name"]["full"], "New Face");
    assert_eq!(face["industry"], "Music");
}

#[tokio::test]
async fn an_invalid_row_rejects_the_whole_import() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "Untouched", "leadType": "mixed"}))
        .await;
    let good = json!({"type": "person", "name": "Good Row"});
    let cases = [
        (
            json!([good, good, {"type": "robot", "name": "Bad"}]),
            "leads[2]",
        ),
        (json!([good, {"name": "No type"}]), "leads[1]"),
        (
            json!([{"type": "person", "contacts": [{"type": "email", "value": "broken"}]}, good]),
            "leads[0]",
        ),
        (
            json!([good, good, good, {"type": "person", "title": 7}]),
            "leads[3]",
        ),
    ];
    for (leads, row) in cases {
        let r = import(&app, json!({"listId": list["id"], "leads": leads})).await;
        assert_eq!(r.status, 400, "{leads} → {}", r.text);
        r.assert_invalid(row);
    }
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
    assert_eq!(
        app.get_list(list["id"].as_str().unwrap()).await["leadCount"],
        0
    );
}

#[tokio::test]
async fn a_row_the_list_forbids_rejects_the_whole_import() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "People", "leadType": "person"}))
        .await;
    let r = import(
        &app,
        json!({"listId": list["id"], "leads": [
            {"type": "person", "name": "Fits"},
            {"type": "company", "name": "Does Not", "domain": "nope.example"}
        ]}),
    )
    .await;
    r.assert_error(400, "invalid_request");
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn import_takes_1_to_500_leads() {
    let app = TestApp::spawn().await;
    import(&app, json!({"leads": []}))
        .await
        .assert_invalid("leads");
    import(&app, json!({})).await.assert_invalid("leads");
    import(&app, json!({"leads": {"type": "person"}}))
        .await
        .assert_invalid("leads");
    let rows = |n: usize| -> Vec<Value> {
        (0..n).map(|i| json!({"type": "person", "name": format!("Row {i}"), "contacts": [{"type": "email", "value": format!("row{i}@example.com")}]})).collect()
    };
    import(&app, json!({"leads": rows(501)}))
        .await
        .assert_invalid("leads");
    assert!(app.all_leads_as(&app.key).await.is_empty());
    let r = import(&app, json!({"leads": rows(500)})).await;
    assert_import_shape(&r);
    assert_eq!(r.body["created"], 500);
    assert_eq!(strings(&r.body["leadIds"]).len(), 500);
    assert_eq!(app.all_leads_as(&app.key).await.len(), 500);
    // The same 500 again: all reused, same ids, same order.
    let again = import(&app, json!({"leads": rows(500)})).await;
    assert_eq!(again.body["created"], 0, "{}", again.text);
    assert_eq!(again.body["reused"], 500);
    assert_eq!(again.body["leadIds"], r.body["leadIds"]);
}

#[tokio::test]
async fn import_into_an_unknown_list_creates_nothing() {
    let app = TestApp::spawn().await;
    let r = import(
        &app,
        json!({"listId": unknown_id(), "leads": [{"type": "person", "name": "Lost"}]}),
    )
    .await;
    assert!(r.status == 400 || r.status == 404, "{}", r.text);
    if r.status == 400 {
        r.assert_invalid("listId");
    } else {
        r.assert_error(404, "not_found");
    }
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
}

// --- CSV import -------------------------------------------------------------------------------

#[tokio::test]
async fn csv_import_maps_columns_to_fields_and_extra_columns_to_attributes() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "From CSV", "leadType": "mixed"}))
        .await;
    let csv = format!(
        "{CSV_COLUMNS},score,segment\n\
         person,Ada Lovelace,,,Chief Engineer,Analytical Engines,analytical.io,ada@analytical.io,https://www.linkedin.com/in/ada-lovelace,+44 20 7946 0000,London,Computing,9,A\n\
         company,\"Acme, Inc.\",,,,,acme.com,,,,Phoenix,Anvils,3,B\n\
         person,,Grace,Hopper,\"Rear Admiral, \"\"Amazing\"\"\",US Navy,,grace@navy.mil,,,,,,\n"
    );
    let r = import_csv(&app, list["id"].as_str().unwrap(), csv).await;
    assert_import_shape(&r);
    assert_eq!(r.body["created"], 3);
    assert_eq!(r.body["reused"], 0);
    assert_eq!(r.body["list"]["id"], list["id"]);
    assert_eq!(r.body["list"]["leadCount"], 3);
    assert_eq!(r.body["list"]["companyCount"], 1);
    let lead_ids = strings(&r.body["leadIds"]);
    assert_eq!(lead_ids.len(), 3);

    let ada = app.get_lead(&lead_ids[0]).await.unwrap();
    assert_lead_shape(&ada);
    assert_eq!(ada["type"], "person");
    assert_eq!(ada["name"]["full"], "Ada Lovelace");
    assert_eq!(ada["name"]["first"], "Ada");
    assert_eq!(ada["name"]["last"], "Lovelace");
    assert_eq!(ada["title"], "Chief Engineer");
    assert_eq!(ada["company"]["name"], "Analytical Engines");
    // For a person, a `domain` column may be read as the lead's or as its company's domain.
    assert!(
        ada["domain"] == "analytical.io" || ada["company"]["domain"] == "analytical.io",
        "the domain column lands on the lead: {ada}"
    );
    assert_eq!(ada["industry"], "Computing");
    assert_eq!(ada["location"]["raw"], "London");
    let contacts = ada["contacts"].as_array().unwrap();
    assert!(
        contacts.iter().any(|c| c["value"] == "ada@analytical.io"
            && c["type"].as_str().is_some_and(|t| t.contains("email"))),
        "email contact: {ada}"
    );
    assert!(
        contacts
            .iter()
            .any(|c| c["type"] == "phone" && c["value"] == "+44 20 7946 0000"),
        "phone contact: {ada}"
    );
    assert!(
        ada["socials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["url"] == "https://www.linkedin.com/in/ada-lovelace"),
        "linkedin social: {ada}"
    );
    assert_eq!(ada["attributes"]["segment"], "A");
    assert!(
        ada["attributes"]["score"] == "9" || ada["attributes"]["score"] == 9,
        "{ada}"
    );

    let acme = app.get_lead(&lead_ids[1]).await.unwrap();
    assert_eq!(acme["type"], "company");
    assert_eq!(acme["name"]["full"], "Acme, Inc.");
    assert_eq!(acme["domain"], "acme.com");
    assert_eq!(acme["attributes"]["segment"], "B");

    let grace = app.get_lead(&lead_ids[2]).await.unwrap();
    assert_eq!(grace["name"]["first"], "Grace");
    assert_eq!(grace["name"]["last"], "Hopper");
    assert_eq!(grace["name"]["full"], "Grace Hopper");
    assert_eq!(grace["title"], "Rear Admiral, \"Amazing\"");
    assert_eq!(grace["company"]["name"], "US Navy");
    assert_eq!(
        grace["attributes"],
        json!({}),
        "empty cells set no attribute"
    );
    assert_eq!(grace["domain"], Value::Null, "empty cells are no value");
}

#[tokio::test]
async fn csv_import_dedupes_like_create() {
    let app = TestApp::spawn().await;
    let existing = app
        .lead(json!({"type": "person", "name": "Known", "contacts": [{"type": "email", "value": "known@example.com"}]}))
        .await;
    let list = app.list(json!({"name": "CSV"})).await;
    let id = list["id"].as_str().unwrap();
    let csv = "type,name,email,industry\n\
               person,Known Again,KNOWN@example.com,Filled\n\
               person,Fresh,fresh@example.com,\n\
               person,Fresh Twice,fresh@example.com,\n";
    let r = import_csv(&app, id, csv).await;
    assert_import_shape(&r);
    let lead_ids = strings(&r.body["leadIds"]);
    assert_eq!(lead_ids[0], existing["id"].as_str().unwrap());
    assert_eq!(lead_ids[1], lead_ids[2]);
    assert_eq!(r.body["created"], 1);
    assert_eq!(r.body["reused"], 2);
    assert_eq!(r.body["list"]["leadCount"], 2);
    let known = app.get_lead(&lead_ids[0]).await.unwrap();
    assert_eq!(known["name"]["full"], "Known");
    assert_eq!(known["industry"], "Filled");
    // The same file again changes nothing.
    let again = import_csv(&app, id, csv).await;
    assert_import_shape(&again);
    assert_eq!(again.body["created"], 0);
    assert_eq!(again.body["reused"], 3);
    assert_eq!(again.body["leadIds"], r.body["leadIds"]);
    assert_eq!(app.all_leads_as(&app.key).await.len(), 2);
}

#[tokio::test]
async fn csv_import_with_an_invalid_row_creates_nothing() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "Strict", "leadType": "mixed"}))
        .await;
    let id = list["id"].as_str().unwrap();
    for csv in [
        "type,name\nperson,Fine\nrobot,Bad\n",
        "type,name,email\nperson,Fine,fine@example.com\nperson,Broken,not-an-email\n",
        "name,email\nNo Type,notype@example.com\n",
    ] {
        let r = import_csv(&app, id, csv).await;
        assert_eq!(r.status, 400, "{csv:?} → {}", r.text);
        r.assert_error(400, "invalid_request");
    }
    let people = app.list(json!({"name": "People only"})).await;
    let r = import_csv(
        &app,
        people["id"].as_str().unwrap(),
        "type,name,domain\nperson,P,\ncompany,C,c.example\n",
    )
    .await;
    r.assert_error(400, "invalid_request");
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
    assert_eq!(app.get_list(id).await["leadCount"], 0);
}

#[tokio::test]
async fn csv_import_into_an_unknown_list_is_404() {
    let app = TestApp::spawn().await;
    let r = import_csv(&app, &unknown_id(), "type,name\nperson,Lost\n").await;
    r.assert_error(404, "not_found");
    assert!(app.all_leads_as(&app.key).await.is_empty());
}

#[tokio::test]
async fn csv_import_of_thousands_of_rows() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Bulk"})).await;
    let id = list["id"].as_str().unwrap();
    let mut csv = String::from("type,name,email,title,tier\n");
    for i in 0..3000 {
        csv.push_str(&format!(
            "person,Bulk Person {i},bulk{i}@example.com,Title {i},t{}\n",
            i % 3
        ));
    }
    let r = import_csv(&app, id, csv).await;
    assert_import_shape(&r);
    assert_eq!(r.body["created"], 3000);
    assert_eq!(r.body["reused"], 0);
    let lead_ids = strings(&r.body["leadIds"]);
    assert_eq!(lead_ids.len(), 3000);
    assert_eq!(r.body["list"]["leadCount"], 3000);
    let last = app.get_lead(&lead_ids[2999]).await.unwrap();
    assert_eq!(last["name"]["full"], "Bulk Person 2999");
    assert_eq!(last["attributes"]["tier"], "t2");

    let export = app.get(&format!("/api/lists/{id}/export.csv")).await;
    assert_eq!(
        export.status,
        200,
        "{}",
        &export.text[..export.text.len().min(500)]
    );
    let (_, rows) = parse_csv(&export.text);
    assert_eq!(rows.len(), 3000, "one row per member");
}

// --- CSV export -------------------------------------------------------------------------------

#[tokio::test]
async fn csv_export_has_base_fields_and_one_column_per_attribute() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Out", "leadType": "mixed"})).await;
    let id = list["id"].as_str().unwrap();
    app.lead(json!({
        "type": "person", "name": "Ada Lovelace", "title": "Engineer, Chief",
        "company": {"name": "Analytical Engines"}, "domain": "analytical.io",
        "contacts": [{"type": "email", "value": "ada@analytical.io"}, {"type": "phone", "value": "+44 20 7946 0000"}],
        "socials": [{"type": "linkedin", "url": "https://www.linkedin.com/in/ada-lovelace"}],
        "location": {"raw": "London"}, "industry": "Computing",
        "attributes": {"score": 9, "segment": "A"}, "listIds": [id]
    }))
    .await;
    app.lead(json!({"type": "company", "name": "Acme", "domain": "acme.com", "attributes": {"tier": "gold"}, "listIds": [id]}))
        .await;
    app.lead(json!({"type": "person", "name": "Not In List", "attributes": {"hidden": 1}}))
        .await;

    let r = app.get(&format!("/api/lists/{id}/export.csv")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/csv"), "content type: {ct}");
    let (header, rows) = parse_csv(&r.text);
    for column in CSV_COLUMNS.split(',') {
        assert!(
            header.iter().any(|h| h == column),
            "column {column} in {header:?}"
        );
    }
    let score = attribute_column(&header, "score").to_string();
    let segment = attribute_column(&header, "segment").to_string();
    let tier = attribute_column(&header, "tier").to_string();
    assert!(
        !header.iter().any(|h| h.contains("hidden")),
        "only members' attributes: {header:?}"
    );
    assert_eq!(rows.len(), 2, "one row per member");
    let ada = rows
        .iter()
        .find(|r| r["name"] == "Ada Lovelace")
        .expect("Ada's row");
    assert_eq!(ada["type"], "person");
    assert_eq!(ada["first_name"], "Ada");
    assert_eq!(ada["last_name"], "Lovelace");
    assert_eq!(ada["title"], "Engineer, Chief");
    assert_eq!(ada["company"], "Analytical Engines");
    assert_eq!(ada["domain"], "analytical.io");
    assert_eq!(ada["email"], "ada@analytical.io");
    assert_eq!(ada["phone"], "+44 20 7946 0000");
    assert_eq!(
        ada["linkedin_url"],
        "https://www.linkedin.com/in/ada-lovelace"
    );
    assert_eq!(ada["location"], "London");
    assert_eq!(ada["industry"], "Computing");
    assert_eq!(ada[&score], "9");
    assert_eq!(
        ada[&segment], "A",
        "a string attribute is its text, not JSON"
    );
    assert_eq!(ada[&tier], "", "an attribute the lead lacks is empty");
    let acme = rows
        .iter()
        .find(|r| r["name"] == "Acme")
        .expect("Acme's row");
    assert_eq!(acme["type"], "company");
    assert_eq!(acme[&tier], "gold");
    assert_eq!(acme[&score], "");
}

#[tokio::test]
async fn csv_export_of_an_empty_list_is_just_the_header() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Empty"})).await;
    let r = app
        .get(&format!(
            "/api/lists/{}/export.csv",
            list["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (header, rows) = parse_csv(&r.text);
    assert!(header.iter().any(|h| h == "name"), "{header:?}");
    assert!(rows.is_empty());
    app.get(&format!("/api/lists/{}/export.csv", unknown_id()))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn csv_export_then_import_round_trips() {
    let app = TestApp::spawn().await;
    let source = app
        .list(json!({"name": "Source", "leadType": "mixed"}))
        .await;
    let sid = source["id"].as_str().unwrap();
    let a = app
        .lead(json!({"type": "person", "name": "Round Trip", "contacts": [{"type": "email", "value": "rt@example.com"}],
                      "attributes": {"stage": "won"}, "listIds": [sid]}))
        .await;
    let b = app.lead(json!({"type": "company", "name": "Trip Co", "domain": "trip.example", "listIds": [sid]})).await;
    let export = app.get(&format!("/api/lists/{sid}/export.csv")).await;
    assert_eq!(export.status, 200, "{}", export.text);

    let target = app
        .list(json!({"name": "Target", "leadType": "mixed"}))
        .await;
    let r = import_csv(&app, target["id"].as_str().unwrap(), export.text.clone()).await;
    assert_import_shape(&r);
    assert_eq!(
        r.body["created"], 0,
        "every exported lead is recognised: {}",
        r.text
    );
    assert_eq!(r.body["reused"], 2);
    let mut got = strings(&r.body["leadIds"]);
    got.sort();
    let mut want = vec![
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(r.body["list"]["leadCount"], 2);
    assert_eq!(app.all_leads_as(&app.key).await.len(), 2);
}

#[tokio::test]
async fn concurrent_overlapping_imports_make_no_duplicates() {
    let app = TestApp::spawn().await;
    let batch = |from: usize| -> Value {
        let leads: Vec<Value> = (from..from + 50)
            .map(|i| json!({"type": "person", "name": format!("Overlap {i}"),
                            "contacts": [{"type": "email", "value": format!("overlap{i}@example.com")}]}))
            .collect();
        json!({"leads": leads})
    };
    let calls = [0, 25, 0, 25].map(|from| app.post("/api/lists/import", batch(from)));
    let answers = futures::future::join_all(calls).await;
    for r in &answers {
        assert_import_shape(r);
    }
    let created: u64 = answers
        .iter()
        .map(|r| r.body["created"].as_u64().unwrap())
        .sum();
    assert_eq!(created, 75, "75 distinct emails, each created once");
    assert_eq!(app.all_leads_as(&app.key).await.len(), 75);
    assert_eq!(answers[0].body["leadIds"], answers[2].body["leadIds"]);
}

#[tokio::test]
async fn csv_from_a_spreadsheet_with_bom_and_crlf_imports() {
    let app = TestApp::spawn().await;
    let list = app.list(json!({"name": "Excel"})).await;
    let csv = "\u{feff}type,name,email\r\nperson,Excel User,excel@example.com\r\nperson,Other User,other@example.com\r\n";
    let r = app
        .send_text(
            &app.key,
            Method::POST,
            &format!("/api/lists/{}/import.csv", list["id"].as_str().unwrap()),
            "text/csv; charset=utf-8",
            csv,
        )
        .await;
    assert_import_shape(&r);
    assert_eq!(r.body["created"], 2);
    let lead = app.get_lead(&strings(&r.body["leadIds"])[0]).await.unwrap();
    assert_eq!(lead["name"]["full"], "Excel User");
    assert_eq!(lead["type"], "person");
    assert!(
        lead["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["value"] == "excel@example.com"),
        "{lead}"
    );
    assert_eq!(lead["attributes"], json!({}), "no stray columns: {lead}");
}

#[tokio::test]
async fn csv_import_above_the_limits_is_refused_whole() {
    let app = TestApp::spawn_with(|c| {
        c.max_csv_bytes = 2048;
        c.max_csv_rows = 10;
    })
    .await;
    let list = app.list(json!({"name": "Limited"})).await;
    let id = list["id"].as_str().unwrap();
    let mut big = String::from("type,name,notes\n");
    for i in 0..5 {
        big.push_str(&format!("person,Big {i},{}\n", "n".repeat(1000)));
    }
    let r = import_csv(&app, id, big).await;
    r.assert_error(413, "payload_too_large");
    let mut many = String::from("type,name\n");
    for i in 0..11 {
        many.push_str(&format!("person,Row {i}\n"));
    }
    let r = import_csv(&app, id, many).await;
    assert!(
        r.status == 400 || r.status == 413,
        "11 rows over a limit of 10: {}",
        r.text
    );
    assert!(
        r.body["error"]["code"] == "invalid_request"
            || r.body["error"]["code"] == "payload_too_large",
        "{}",
        r.text
    );
    assert!(
        app.all_leads_as(&app.key).await.is_empty(),
        "nothing was created"
    );
    let mut ten = String::from("type,name\n");
    for i in 0..10 {
        ten.push_str(&format!("person,Row {i}\n"));
    }
    let r = import_csv(&app, id, ten).await;
    assert_import_shape(&r);
    assert_eq!(r.body["created"], 10);
}

#[tokio::test]
async fn preview_validates_rows_and_changes_no_list() {
    let app = TestApp::spawn().await;
    let list = app
        .list(json!({"name": "Preview target", "leadType": "mixed"}))
        .await;
    let r = import(
        &app,
        json!({"preview": true, "listId": list["id"], "leads": [{"type": "person", "name": "Fine"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["preview"]["leadCount"], 1);
    assert_eq!(
        app.get_list(list["id"].as_str().unwrap()).await["leadCount"],
        0,
        "a preview adds nothing"
    );
    let r = import(
        &app,
        json!({"preview": true, "leads": [{"type": "person", "name": "Fine"}, {"type": "alien"}]}),
    )
    .await;
    r.assert_invalid("leads[1]");
    assert!(app.all_leads_as(&app.key).await.is_empty());
}
