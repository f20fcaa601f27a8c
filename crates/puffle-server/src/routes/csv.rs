//! CSV import and export of a list's leads ([ours], spec §4). Both stream: the import parses
//! rows as the body arrives (then writes them in one transaction, so it stays all or nothing);
//! the export writes a page of members at a time.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use puffle_domain::lead::{Lead, LeadInput, NewLead};
use puffle_domain::list::ListLeadType;
use puffle_domain::{new_id, LeadType};
use puffle_store::{Store, StoreError};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};

/// The columns that map onto lead fields, in export order (after `id`). Others are attributes.
const BASE_COLUMNS: [&str; 12] = [
    "type",
    "name",
    "first_name",
    "last_name",
    "title",
    "company",
    "domain",
    "email",
    "linkedin_url",
    "phone",
    "location",
    "industry",
];
const EXPORT_PAGE: u32 = 500;

pub async fn import_csv(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let list = state
        .store
        .lists(auth.workspace(), Some(&id))
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("list"))?;
    let default_type = match list.lead_type {
        ListLeadType::Person => Some(LeadType::Person),
        ListLeadType::Company => Some(LeadType::Company),
        ListLeadType::Mixed => None,
    };
    let max_rows = state.config.max_csv_rows;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let parser = tokio::task::spawn_blocking(move || {
        parse_rows(
            ChannelReader {
                rx,
                chunk: Bytes::new(),
            },
            default_type,
            max_rows,
        )
    });
    let mut chunks = body.into_data_stream();
    let mut received = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::invalid("body", format!("could not be read ({e})")))?;
        received += chunk.len();
        if received > state.config.max_csv_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "The CSV is larger than this server accepts ({} bytes).",
                state.config.max_csv_bytes
            )));
        }
        if tx.send(chunk).await.is_err() {
            break; // The parser stopped early: it has an error to report.
        }
    }
    drop(tx);
    let leads = parser
        .await
        .map_err(|e| ApiError::Internal(format!("CSV parser task failed: {e}")))??;
    if leads.is_empty() {
        return Err(ApiError::invalid("body", "the CSV has no data rows"));
    }
    let imported = state
        .store
        .import_leads(auth.workspace(), leads, Some(&list.id))
        .await
        .map_err(|e| match e {
            StoreError::Invalid(inv) => ApiError::invalid(&row_to_line(&inv.field), inv.message),
            other => other.into(),
        })?;
    Ok(Json(json!({
        "list": imported.list,
        "leadIds": imported.lead_ids,
        "created": imported.created,
        "reused": imported.reused,
    })))
}

/// The store names rows as `leads[i]…`; a CSV user thinks in file lines (the header is line 1).
fn row_to_line(field: &str) -> String {
    let parsed = field
        .strip_prefix("leads[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)));
    match parsed {
        Some((i, rest)) => format!("line {}{}", i + 2, rest.replacen('.', " ", 1)),
        None => field.to_string(),
    }
}

/// Blocking `Read` over body chunks arriving on a channel, for the CSV reader.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.chunk = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

fn parse_rows(
    reader: impl std::io::Read,
    default_type: Option<LeadType>,
    max_rows: usize,
) -> ApiResult<Vec<NewLead>> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers: Vec<String> = csv
        .headers()
        .map_err(|e| ApiError::invalid("line 1", format!("is not a CSV header row ({e})")))?
        .iter()
        .map(|h| h.to_lowercase())
        .collect();
    if headers.iter().all(|h| h.is_empty()) {
        return Err(ApiError::invalid("line 1", "a header row is required"));
    }
    let mut leads = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let more = csv.read_record(&mut record).map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            ApiError::invalid(&format!("line {line}"), format!("is not valid CSV ({e})"))
        })?;
        if !more {
            break;
        }
        let line = record.position().map_or(0, |p| p.line());
        if leads.len() == max_rows {
            return Err(ApiError::invalid(
                "body",
                format!("holds more than {max_rows} rows, the most one import may hold"),
            ));
        }
        let field = format!("line {line}");
        let input = row_to_input(&headers, &record, default_type)
            .map_err(|m| ApiError::invalid(&field, m))?;
        let lead = input
            .into_new_lead(new_id)
            .map_err(|e| ApiError::invalid(&format!("{field} {}", e.field), e.message))?;
        leads.push(lead);
    }
    Ok(leads)
}

/// One CSV row as the JSON a client would have sent to create the lead.
fn row_to_input(
    headers: &[String],
    record: &csv::StringRecord,
    default_type: Option<LeadType>,
) -> Result<LeadInput, String> {
    let mut lead = Map::new();
    let mut name = Map::new();
    let mut contacts = Vec::new();
    let mut attributes = Map::new();
    let mut kind = default_type.map(LeadType::as_str).map(str::to_string);
    let mut domain = None;
    for (header, value) in headers.iter().zip(record.iter()) {
        if value.is_empty() {
            continue;
        }
        let v = json!(value);
        match header.as_str() {
            "type" => kind = Some(value.to_lowercase()),
            "name" => drop(name.insert("full".into(), v)),
            "first_name" => drop(name.insert("first".into(), v)),
            "last_name" => drop(name.insert("last".into(), v)),
            "title" | "industry" => drop(lead.insert(header.clone(), v)),
            "company" => drop(lead.insert("company".into(), json!({"name": value}))),
            "domain" => domain = Some(v),
            "email" => contacts.push(json!({"type": "email", "value": value})),
            "phone" => contacts.push(json!({"type": "phone", "value": value})),
            "linkedin_url" => drop(lead.insert(
                "socials".into(),
                json!([{"type": "linkedin", "url": value}]),
            )),
            "location" => drop(lead.insert("location".into(), v)),
            "id" | "" => {}
            other => drop(attributes.insert(other.to_string(), v)),
        }
    }
    let kind = kind.ok_or("type is required (a type column, or a person or company list)")?;
    let kind = LeadType::parse(&kind)
        .ok_or_else(|| format!("type must be person or company, got {kind:?}"))?;
    // A person's domain is their company's; a company's is its own.
    if let Some(domain) = domain {
        match (kind, lead.get_mut("company")) {
            (LeadType::Person, Some(Value::Object(company))) => {
                company.insert("domain".into(), domain);
            }
            (LeadType::Person, _) => drop(lead.insert("company".into(), json!({"domain": domain}))),
            (LeadType::Company, _) => drop(lead.insert("domain".into(), domain)),
        }
    }
    lead.insert("type".into(), json!(kind));
    if !name.is_empty() {
        lead.insert("name".into(), Value::Object(name));
    }
    if !contacts.is_empty() {
        lead.insert("contacts".into(), json!(contacts));
    }
    if !attributes.is_empty() {
        lead.insert("attributes".into(), Value::Object(attributes));
    }
    serde_json::from_value(Value::Object(lead)).map_err(|e| e.to_string())
}

pub async fn export_csv(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let workspace = auth.workspace().to_string();
    let keys = state.store.list_attribute_keys(&workspace, &id).await?;
    let keys = Arc::new(keys);
    let mut header = vec!["id".to_string()];
    header.extend(BASE_COLUMNS.iter().map(|c| c.to_string()));
    header.extend(keys.iter().cloned());
    let head = csv_bytes(std::iter::once(header));

    struct Cursor {
        store: Arc<dyn Store>,
        workspace: String,
        list: String,
        keys: Arc<Vec<String>>,
        after: Option<String>,
        done: bool,
    }
    let start = Cursor {
        store: state.store.clone(),
        workspace,
        list: id,
        keys,
        after: None,
        done: false,
    };
    let pages = futures::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        let page = c
            .store
            .list_members(&c.workspace, &c.list, None, c.after.as_deref(), EXPORT_PAGE)
            .await;
        let chunk = match page {
            Ok(page) => {
                let rows = page.members.iter().map(|(lead, _)| lead_row(lead, &c.keys));
                let bytes = csv_bytes(rows);
                c.done = page.next_cursor.is_none();
                c.after = page.next_cursor;
                Ok(bytes)
            }
            Err(e) => {
                tracing::error!(error = %e, "CSV export stopped");
                c.done = true;
                Err(std::io::Error::other("export failed"))
            }
        };
        Some((chunk, c))
    });
    let body = futures::stream::once(async move { Ok(head) }).chain(pages);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"leads.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn csv_bytes(rows: impl Iterator<Item = Vec<String>>) -> Bytes {
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in rows {
        // Writing to a Vec cannot fail.
        let _ = out.write_record(&row);
    }
    Bytes::from(out.into_inner().unwrap_or_default())
}

fn lead_row(lead: &Lead, keys: &[String]) -> Vec<String> {
    let f = &lead.fields;
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let contact = |kind: &str| {
        f.contacts
            .iter()
            .find(|c| c.kind.as_deref() == Some(kind) || (kind == "email" && c.is_email()))
            .map(|c| c.value.clone())
            .unwrap_or_default()
    };
    let linkedin = f
        .socials
        .iter()
        .find(|s| s.kind.as_deref() == Some("linkedin"))
        .map(|s| s.url.clone())
        .unwrap_or_default();
    let l = &f.location;
    let location = l.raw.clone().unwrap_or_else(|| {
        [&l.city, &l.state, &l.country]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    });
    let mut row = vec![
        lead.id.clone(),
        lead.kind.as_str().to_string(),
        text(&f.name.full),
        text(&f.name.first),
        text(&f.name.last),
        text(&f.title),
        text(&f.company.name),
        text(f.domain.as_ref().map_or(&f.company.domain, |_| &f.domain)),
        contact("email"),
        linkedin,
        contact("phone"),
        location,
        text(&f.industry),
    ];
    row.extend(keys.iter().map(|k| match lead.attributes.get(k) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }));
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_map_columns_onto_lead_fields() {
        let data = "Type,Name,Email,Domain,linkedin_url,Score\n\
                    person,Ann Lee,ann@acme.com,acme.com,https://linkedin.com/in/ann,7\n\
                    company,Acme,,acme.com,,\n";
        let leads = parse_rows(data.as_bytes(), None, 10).unwrap();
        assert_eq!(leads.len(), 2);
        let ann = &leads[0];
        assert_eq!(ann.fields.name.first.as_deref(), Some("Ann"));
        assert_eq!(ann.fields.company.domain.as_deref(), Some("acme.com"));
        assert_eq!(ann.fields.contacts[0].value, "ann@acme.com");
        assert_eq!(ann.attributes["score"], "7");
        assert_eq!(leads[1].fields.domain.as_deref(), Some("acme.com"));
    }

    #[test]
    fn bad_rows_are_named_by_line() {
        let data = "type,email\nperson,a@b.io\nrobot,x@y.io\n";
        let Err(ApiError::Invalid(m)) = parse_rows(data.as_bytes(), None, 10) else {
            panic!("a bad row must be refused")
        };
        assert!(m.starts_with("line 3"), "{m}");
        let Err(ApiError::Invalid(m)) = parse_rows("email\na@b.io\n".as_bytes(), None, 10) else {
            panic!("a row without type must be refused")
        };
        assert!(m.starts_with("line 2"), "{m}");
        let many = "type\nperson\nperson\nperson\n";
        assert!(parse_rows(many.as_bytes(), None, 2).is_err());
        assert_eq!(row_to_line("leads[3].type"), "line 5 type");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A cell: text users paste, including quotes, commas and line breaks.
        fn cell() -> impl Strategy<Value = String> {
            prop_oneof!["[a-zA-Z0-9 ]{0,8}", "\\PC{0,8}", "[\",\n\r]{1,3}"]
        }

        proptest! {
            #[test]
            fn any_bytes_parse_or_are_refused(data in prop::collection::vec(any::<u8>(), 0..200), max in 0usize..5) {
                if let Ok(leads) = parse_rows(data.as_slice(), Some(LeadType::Person), max) {
                    prop_assert!(leads.len() <= max);
                }
            }

            #[test]
            fn any_text_parses_or_is_refused(data in "(type|name|email|x|,|\n|\"|person|a@b\\.io|\\PC){0,40}") {
                let _ = parse_rows(data.as_bytes(), None, 100);
            }

            /// Rows written by a CSV writer come back as one lead each, with their names and
            /// attributes (trimmed, as the parser trims cells).
            #[test]
            fn written_rows_read_back(rows in prop::collection::vec((cell(), cell()), 1..6)) {
                let mut writer = csv::Writer::from_writer(Vec::new());
                writer.write_record(["type", "name", "note"]).unwrap();
                for (name, note) in &rows {
                    writer.write_record(["person", name, note]).unwrap();
                }
                let data = writer.into_inner().unwrap();
                let leads = parse_rows(data.as_slice(), None, 100).expect("a well-formed file");
                prop_assert_eq!(leads.len(), rows.len());
                for (lead, (name, note)) in leads.iter().zip(&rows) {
                    let name = name.trim();
                    let expected = (!name.is_empty()).then(|| name.to_string());
                    prop_assert_eq!(lead.fields.name.full.clone(), expected);
                    let note = note.trim();
                    let got = lead.attributes.get("note").and_then(|v| v.as_str());
                    prop_assert_eq!(got, (!note.is_empty()).then_some(note));
                }
            }
        }
    }
}
