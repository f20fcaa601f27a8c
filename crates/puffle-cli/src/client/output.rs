//! The one output formatter: every successful response goes through [`write`].

use std::io::{ErrorKind, Write};

use clap::ValueEnum;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::value::RawValue;
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
    write_body(format, &body)
}

/// Print a JSON body already read in full, as [`write`] does.
pub fn write_body(format: Format, body: &[u8]) -> Result<(), Fail> {
    let value = match serde_json::from_slice::<Value>(body) {
        Ok(value) if format != Format::Raw => value,
        _ => {
            stdout(body)?;
            return Ok(());
        }
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

/// A table cell: on one line, at most `width` characters (cut with `…`).
fn cell(s: &str, width: usize) -> String {
    let s = s.replace(['\n', '\r', '\t'], " ");
    if s.chars().count() > width {
        s.chars()
            .take(width.saturating_sub(1))
            .chain(['…'])
            .collect()
    } else {
        s
    }
}

fn table(rows: &Rows) -> String {
    let lines: Vec<Vec<String>> = std::iter::once(&rows.columns)
        .chain(&rows.rows)
        .map(|row| row.iter().map(|c| cell(c, MAX_CELL)).collect())
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

// ---------------------------------------------------------------- items of enrichment runs

/// The columns of an item row and where each value is in the item; `result` is compact JSON.
/// `table` shows the first [`TABLE_ITEM_COLUMNS`] of them, `csv` all.
const ITEM_COLUMNS: [(&str, &str); 12] = [
    ("id", "/id"),
    ("leadId", "/leadId"),
    ("status", "/status"),
    ("attempts", "/attempts"),
    ("skippedReason", "/skippedReason"),
    ("result", "/result"),
    ("error.message", "/error/message"),
    ("listId", "/listId"),
    ("membershipId", "/membershipId"),
    ("provider", "/metadata/provider"),
    ("startedAt", "/timing/startedAt"),
    ("completedAt", "/timing/completedAt"),
];
const TABLE_ITEM_COLUMNS: usize = 7;

/// Items of an enrichment run, printed page by page as they arrive, never gathered: with `table`
/// or `csv` one row per item under a single header; with the other formats one JSON object per
/// line (NDJSON), each as the API sent it.
pub struct ItemWriter {
    format: Format,
    header_written: bool,
    /// The column widths of `table`, set by the header and the first page: later pages cannot
    /// widen columns already printed, so their longer cells are cut (the last column is not).
    widths: Vec<usize>,
}

impl ItemWriter {
    pub fn new(format: Format) -> ItemWriter {
        ItemWriter {
            format,
            header_written: false,
            widths: Vec::new(),
        }
    }

    /// Print one page of items: `body` as received and its `items` (the header goes before the
    /// first page, even an empty one). `false` when the reader of stdout went away, so that no
    /// further page need be fetched.
    pub fn page(&mut self, body: &[u8], items: &[Value]) -> Result<bool, Fail> {
        let text = self.render(body, items);
        if text.is_empty() {
            return Ok(true);
        }
        stdout(&text)
    }

    fn render(&mut self, body: &[u8], items: &[Value]) -> Vec<u8> {
        let text = match self.format {
            Format::Csv => self.csv_rows(items),
            Format::Table => self.table_rows(items),
            Format::Json | Format::Pretty | Format::Raw => ndjson(body, items).into_bytes(),
        };
        self.header_written = true;
        text
    }

    fn csv_rows(&self, items: &[Value]) -> Vec<u8> {
        let mut out = csv::Writer::from_writer(Vec::new());
        if !self.header_written {
            out.write_record(ITEM_COLUMNS.map(|(name, _)| name))
                .expect("CSV to memory");
        }
        for item in items {
            out.write_record(item_cells(item, ITEM_COLUMNS.len()))
                .expect("CSV to memory");
        }
        out.into_inner().expect("CSV to memory")
    }

    fn table_rows(&mut self, items: &[Value]) -> Vec<u8> {
        let columns = &ITEM_COLUMNS[..TABLE_ITEM_COLUMNS];
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|item| item_cells(item, TABLE_ITEM_COLUMNS))
            .collect();
        let mut lines = Vec::new();
        if !self.header_written {
            let header: Vec<String> = columns.iter().map(|(name, _)| name.to_string()).collect();
            self.widths = columns
                .iter()
                .enumerate()
                .map(|(i, (name, _))| {
                    let widest = rows.iter().map(|row| row[i].chars().count()).max();
                    widest
                        .unwrap_or(0)
                        .max(name.len())
                        .max(min_item_width(name))
                        .min(MAX_CELL)
                })
                .collect();
            lines.push(header);
        }
        lines.extend(rows);
        let last = columns.len() - 1;
        let mut out = String::new();
        for line in &lines {
            let mut text = String::new();
            for (i, value) in line.iter().enumerate() {
                if i == last {
                    text.push_str(&cell(value, MAX_CELL));
                } else {
                    let value = cell(value, self.widths[i]);
                    let pad = self.widths[i] - value.chars().count() + 2;
                    text.push_str(&value);
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out.into_bytes()
    }
}

/// One line per item: its text as received (the API's key order, numbers as sent) when it holds
/// no line break, else the item re-serialized.
fn ndjson(body: &[u8], items: &[Value]) -> String {
    #[derive(Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        items: Vec<&'a RawValue>,
    }
    let raw = serde_json::from_slice::<Page>(body)
        .ok()
        .filter(|page| page.items.len() == items.len());
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        match raw.as_ref().map(|page| page.items[i].get()) {
            Some(text) if !text.contains(['\n', '\r']) => out.push_str(text),
            _ => out.push_str(&item.to_string()),
        }
        out.push('\n');
    }
    out
}

/// The cells of the first `count` item columns.
fn item_cells(item: &Value, count: usize) -> Vec<String> {
    ITEM_COLUMNS[..count]
        .iter()
        .map(|(name, pointer)| match item.pointer(pointer) {
            None | Some(Value::Null) => String::new(),
            Some(value) if *name == "result" => value.to_string(),
            Some(value) => plain(value),
        })
        .collect()
}

/// The least width of a `table` column, so that the values a later page may bring fit it.
fn min_item_width(column: &str) -> usize {
    match column {
        "id" | "leadId" => 36,
        "status" => "completed".len(),
        "skippedReason" => "already_has_value".len(),
        "result" => 24,
        _ => 0,
    }
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

    /// A page of these items, and the body it came in.
    fn body(items: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({"items": items, "page": {"nextCursor": null}})).unwrap()
    }

    fn render(writer: &mut ItemWriter, items: &[Value]) -> String {
        String::from_utf8(writer.render(&body(items), items)).unwrap()
    }

    fn item(id: &str, status: &str, result: Value, error: Option<&str>) -> Value {
        json!({"id": id, "runId": "r", "leadId": format!("lead-{id}"), "listId": null,
            "membershipId": null, "status": status, "result": result, "attempts": 1,
            "skippedReason": null, "error": error.map(|m| json!({"message": m, "details": null})),
            "metadata": {"provider": "builtin", "leadSnapshot": {"id": "x"}},
            "timing": {"startedAt": "2026-01-01T00:00:00.000Z", "completedAt": null}})
    }

    #[test]
    fn item_pages_share_one_header_and_keep_results_as_json() {
        let mut csv_out = ItemWriter::new(Format::Csv);
        let first = render(
            &mut csv_out,
            &[item("a", "completed", json!({"domain": "acme.com"}), None)],
        );
        let second = render(
            &mut csv_out,
            &[item("b", "failed", Value::Null, Some("HTTP 500, twice"))],
        );
        let empty = render(&mut csv_out, &[]);
        let text = [first, second, empty].concat();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            ITEM_COLUMNS.map(|(name, _)| name)
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert_eq!(&rows[0][5], r#"{"domain":"acme.com"}"#);
        assert_eq!(&rows[0][9], "builtin");
        assert_eq!((&rows[1][5], &rows[1][6]), ("", "HTTP 500, twice"));

        // An empty first page still prints the header; NDJSON is one compact item per line.
        let header = render(&mut ItemWriter::new(Format::Csv), &[]);
        assert_eq!(header.lines().count(), 1);
        let two = [
            item("a", "completed", json!(1), None),
            item("b", "skipped", Value::Null, None),
        ];
        let text = render(&mut ItemWriter::new(Format::Json), &two);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, two);
    }

    #[test]
    fn ndjson_lines_are_the_items_as_received() {
        let body =
            br#"{"items": [{"id": "b", "attempts": 1.50, "a": [1, 2]}, {"id": "c"}], "page": {}}"#;
        let items: Value = serde_json::from_slice(body).unwrap();
        let items = items["items"].as_array().unwrap();
        let text = ItemWriter::new(Format::Raw).render(body, items);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "{\"id\": \"b\", \"attempts\": 1.50, \"a\": [1, 2]}\n{\"id\": \"c\"}\n"
        );
        // An item spread over lines is re-serialized onto one.
        let body = b"{\"items\": [{\n\"id\": \"b\"\n}]}";
        let items = [json!({"id": "b"})];
        let text = ItemWriter::new(Format::Json).render(body, &items);
        assert_eq!(String::from_utf8(text).unwrap(), "{\"id\":\"b\"}\n");
    }

    #[test]
    fn item_tables_keep_the_first_pages_columns() {
        let mut table = ItemWriter::new(Format::Table);
        let first = render(
            &mut table,
            &[item("a", "completed", json!({"domain": "acme.com"}), None)],
        );
        let long = "x".repeat(100);
        let later = render(
            &mut table,
            &[item("b", "failed", json!({ "long": long }), Some(&long))],
        );
        let header = first.lines().next().unwrap();
        assert!(header.starts_with("id  "), "{header}");
        let tail = format!("{:<26}error.message", "result");
        assert!(
            header.ends_with(&tail),
            "result is 24 wide at least: {header}"
        );
        assert_eq!(later.lines().count(), 1, "no second header: {later}");
        let at = |line: &str, column: &str| header.find(column).map(|i| line.chars().nth(i));
        let row = later.lines().next().unwrap();
        assert_eq!(at(row, "status"), Some(Some('f')), "{header}\n{row}");
        assert_eq!(at(row, "error.message"), Some(Some('x')), "{header}\n{row}");
        assert!(
            row.contains("…"),
            "a long result is cut to its column: {row}"
        );
        let in_result = 24 - 1 - r#"{"long":""#.len();
        let xs = row.chars().filter(|c| *c == 'x').count();
        assert_eq!(
            xs,
            in_result + MAX_CELL - 1,
            "the last column is cut at MAX_CELL"
        );
    }

    #[test]
    fn responses_without_a_list_of_objects_have_no_rows() {
        assert!(rows(&json!({"list": {"id": "x"}})).is_none());
        assert!(rows(&json!({"leadIds": ["a"], "list": null})).is_none());
        assert!(rows(&json!({"leads": ["a"]})).is_none());
    }
}
