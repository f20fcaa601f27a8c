//! The one output formatter: every successful response goes through [`write`].

use std::io::{ErrorKind, Write};

use clap::ValueEnum;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value};

use super::http::{plain, Fail};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Pretty,
    Raw,
    Table,
    Csv,
}

/// Keys whose value is the list of objects `table` and `csv` print, one row each.
const ROW_KEYS: [&str; 4] = ["leads", "lists", "items", "ledger"];

/// Widest cell `table` prints; longer values are cut (use `csv` for everything).
const MAX_CELL: usize = 60;

/// Print a successful response on stdout. Bodies that are not JSON (CSV exports), and every body
/// with `--format raw`, are copied as received, chunk by chunk.
pub async fn write(format: Format, mut response: reqwest::Response) -> Result<(), Fail> {
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let read_failed =
        |e: reqwest::Error| Fail::failure(format!("reading the response failed: {e}"));
    if format == Format::Raw || !is_json {
        while let Some(chunk) = response.chunk().await.map_err(read_failed)? {
            if !stdout(&chunk)? {
                break;
            }
        }
        return Ok(());
    }
    let body = response.bytes().await.map_err(read_failed)?;
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        stdout(&body)?;
        return Ok(());
    };
    let text = match format {
        Format::Table => rows(&value).map(|rows| table(&rows)),
        Format::Csv => rows(&value).map(|rows| csv(&rows)),
        _ => None,
    };
    let text = text.unwrap_or_else(|| {
        let mut text = serde_json::to_string_pretty(&value).expect("JSON prints");
        text.push('\n');
        text
    });
    stdout(text.as_bytes())?;
    Ok(())
}

/// Write to stdout; `false` when the reader went away (e.g. `| head`), which is not an error.
fn stdout(bytes: &[u8]) -> Result<bool, Fail> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Fail::failure(format!("writing to stdout failed: {e}"))),
    }
}

/// A table: a header and one row of cells per object.
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The list of objects of a response, flattened (`name.full`, arrays as compact JSON); `None` when
/// the response holds no such list.
fn rows(value: &Value) -> Option<Rows> {
    let body = value.as_object()?;
    let objects = ROW_KEYS.iter().find_map(|key| body.get(*key)?.as_array())?;
    let flat: Vec<Vec<(String, String)>> = objects
        .iter()
        .map(|object| {
            let mut cells = Vec::new();
            flatten("", object.as_object()?, &mut cells);
            Some(cells)
        })
        .collect::<Option<_>>()?;
    let mut columns: Vec<String> = Vec::new();
    for (key, _) in flat.iter().flatten() {
        if !columns.contains(key) {
            columns.push(key.clone());
        }
    }
    // The id first; the rest in key order.
    if let Some(at) = columns.iter().position(|c| c == "id") {
        let id = columns.remove(at);
        columns.insert(0, id);
    }
    let rows = flat
        .into_iter()
        .map(|cells| {
            columns
                .iter()
                .map(|c| {
                    cells
                        .iter()
                        .find(|(k, _)| k == c)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    Some(Rows { columns, rows })
}

fn flatten(prefix: &str, object: &Map<String, Value>, cells: &mut Vec<(String, String)>) {
    for (key, value) in object {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(&key, inner, cells),
            Value::Object(_) => {}
            other => cells.push((key, plain(other))),
        }
    }
}

fn csv(rows: &Rows) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    if !rows.columns.is_empty() {
        out.write_record(&rows.columns).expect("CSV to memory");
    }
    for row in &rows.rows {
        out.write_record(row).expect("CSV to memory");
    }
    String::from_utf8(out.into_inner().expect("CSV to memory")).expect("CSV of strings is UTF-8")
}

fn table(rows: &Rows) -> String {
    let cell = |s: &str| -> String {
        let s = s.replace(['\n', '\r', '\t'], " ");
        if s.chars().count() > MAX_CELL {
            s.chars().take(MAX_CELL - 1).chain(['…']).collect()
        } else {
            s
        }
    };
    let lines: Vec<Vec<String>> = std::iter::once(&rows.columns)
        .chain(&rows.rows)
        .map(|row| row.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths = vec![0; rows.columns.len()];
    for line in &lines {
        for (width, c) in widths.iter_mut().zip(line) {
            *width = (*width).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines.iter().filter(|line| !line.is_empty()) {
        let mut text = String::new();
        for (c, width) in line.iter().zip(&widths) {
            text.push_str(c);
            text.extend(std::iter::repeat_n(' ', width - c.chars().count() + 2));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_flatten_nested_objects_and_keep_arrays_as_json() {
        let body = json!({"leads": [
            {"id": "b", "name": {"full": "Ada"}, "socials": [{"type": "x"}], "size": 5, "title": null},
            {"id": "a", "company": {"domain": "acme.com"}, "attributes": {}},
        ], "nextCursor": null});
        let rows = rows(&body).unwrap();
        assert_eq!(
            rows.columns,
            [
                "id",
                "name.full",
                "size",
                "socials",
                "title",
                "company.domain"
            ]
        );
        assert_eq!(rows.rows[0], ["b", "Ada", "5", r#"[{"type":"x"}]"#, "", ""]);
        assert_eq!(rows.rows[1], ["a", "", "", "", "", "acme.com"]);
        assert_eq!(
            csv(&rows).lines().next(),
            Some("id,name.full,size,socials,title,company.domain")
        );
        let table = table(&rows);
        assert!(table.starts_with("id  name.full  size  socials"), "{table}");
    }

    #[test]
    fn responses_without_a_list_of_objects_have_no_rows() {
        assert!(rows(&json!({"list": {"id": "x"}})).is_none());
        assert!(rows(&json!({"leadIds": ["a"], "list": null})).is_none());
        assert!(rows(&json!({"leads": ["a"]})).is_none());
    }
}
