//! `{{lead.<path>}}` and `{{input.<path>}}` placeholders in the inputs of `custom_http` and
//! `custom_ai` (spec §5).
//!
//! A placeholder runs from `{{` to the next `}}`; whitespace just inside the braces is ignored.
//! Its path walks a JSON value: `lead.…` the lead as the API shows it
//! (`serde_json::to_value(lead)`, camelCase), `input.…` the run's `input` object. Segments are
//! separated by `.`; a numeric segment indexes an array (`lead.contacts.0.value`). Object keys
//! may themselves contain dots (`lead.attributes.linkedin.url` finds the attribute
//! `"linkedin.url"`): when several splits of the path name existing keys, the longest key is tried
//! first and shorter ones on a dead end.
//!
//! A `{{` with no `}}` after it is literal text. Any other placeholder must start with `lead` or
//! `input` (else [`TemplateError::UnknownPlaceholder`], which run creation reports); one whose
//! value is missing or `null` makes rendering fail with [`TemplateError::Missing`], which the
//! providers turn into `Outcome::MissingInput`.

use puffle_domain::lead::Lead;
use serde_json::Value;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Placeholders whose value is missing or null, as written (`lead.company.domain`), each once,
    /// in order of appearance.
    #[error("no value for {}", list_placeholders(.0))]
    Missing(Vec<String>),
    /// A placeholder whose path starts with neither `lead` nor `input`.
    #[error("unknown placeholder {{{{{0}}}}}: placeholders start with `lead.` or `input.`")]
    UnknownPlaceholder(String),
}

fn list_placeholders(paths: &[String]) -> String {
    paths
        .iter()
        .map(|p| format!("{{{{{p}}}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl TemplateError {
    /// Combine the errors of several renderings into one: an unknown placeholder wins; otherwise
    /// the missing placeholders of all of them, each once.
    pub fn merge(errors: impl IntoIterator<Item = TemplateError>) -> Option<TemplateError> {
        let mut missing: Vec<String> = Vec::new();
        for e in errors {
            match e {
                TemplateError::UnknownPlaceholder(_) => return Some(e),
                TemplateError::Missing(paths) => push_unique(&mut missing, paths),
            }
        }
        (!missing.is_empty()).then_some(TemplateError::Missing(missing))
    }
}

fn push_unique(into: &mut Vec<String>, more: Vec<String>) {
    for p in more {
        if !into.contains(&p) {
            into.push(p);
        }
    }
}

/// What placeholders read: the lead's API JSON and the run's input.
#[derive(Debug, Clone)]
pub struct Context {
    lead: Value,
    input: Value,
}

impl Context {
    pub fn new(lead: &Lead, input: &Value) -> Context {
        Context {
            // A `Lead` is plain data with string keys: serializing it cannot fail.
            lead: serde_json::to_value(lead).unwrap_or(Value::Null),
            input: input.clone(),
        }
    }

    /// A context over arbitrary JSON (tests, previews).
    pub fn from_values(lead: Value, input: Value) -> Context {
        Context { lead, input }
    }

    /// The non-null value a placeholder path names, or `None`.
    fn lookup(&self, path: &Path<'_>) -> Option<&Value> {
        let root = match path.root {
            Root::Lead => &self.lead,
            Root::Input => &self.input,
        };
        walk(root, &path.segments).filter(|v| !v.is_null())
    }
}

/// Render a URL: each value is percent-encoded (everything but RFC 3986 unreserved characters),
/// so a lead's data can never add a path segment, a query parameter or a fragment.
pub fn render_url(template: &str, ctx: &Context) -> Result<String, TemplateError> {
    render_with(template, ctx, percent_encode_into)
}

/// Render plain text (a header value, a prompt, a body string): values inserted as they are;
/// a non-string value as compact JSON.
pub fn render_text(template: &str, ctx: &Context) -> Result<String, TemplateError> {
    render_with(template, ctx, |text, out| out.push_str(text))
}

/// Render a JSON body: every string value, at any depth, is rendered as text; object keys and
/// non-string values are kept as they are. Missing placeholders of all strings are reported
/// together.
pub fn render_json(template: &Value, ctx: &Context) -> Result<Value, TemplateError> {
    let mut errors = Vec::new();
    let rendered = render_json_inner(template, ctx, &mut errors);
    match TemplateError::merge(errors) {
        Some(e) => Err(e),
        None => Ok(rendered),
    }
}

fn render_json_inner(v: &Value, ctx: &Context, errors: &mut Vec<TemplateError>) -> Value {
    match v {
        Value::String(s) => match render_text(s, ctx) {
            Ok(r) => Value::String(r),
            Err(e) => {
                errors.push(e);
                Value::Null
            }
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_json_inner(i, ctx, errors))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, i)| (k.clone(), render_json_inner(i, ctx, errors)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Check a template's placeholders without a lead: every one names a known root.
pub fn validate(template: &str) -> Result<(), TemplateError> {
    for piece in parse(template) {
        if let Piece::Placeholder(inner) = piece {
            Path::parse(inner)?;
        }
    }
    Ok(())
}

/// [`validate`] for every string inside a JSON value.
pub fn validate_json(template: &Value) -> Result<(), TemplateError> {
    match template {
        Value::String(s) => validate(s),
        Value::Array(items) => items.iter().try_for_each(validate_json),
        Value::Object(map) => map.values().try_for_each(validate_json),
        _ => Ok(()),
    }
}

/// Render `template` with every placeholder replaced by `replacement`, as if every value were
/// present (used to check the shape of a templated URL at run creation).
pub fn render_placeholders_as(template: &str, replacement: &str) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(inner) => {
                Path::parse(inner)?;
                out.push_str(replacement);
            }
        }
    }
    Ok(out)
}

fn render_with(
    template: &str,
    ctx: &Context,
    insert: impl Fn(&str, &mut String),
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut missing: Vec<String> = Vec::new();
    for piece in parse(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(inner) => {
                let path = Path::parse(inner)?;
                match ctx.lookup(&path) {
                    Some(Value::String(s)) => insert(s, &mut out),
                    Some(other) => insert(&other.to_string(), &mut out),
                    None => push_unique(&mut missing, vec![inner.trim().to_string()]),
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(TemplateError::Missing(missing))
    }
}

#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    /// What is between the braces, untrimmed.
    Placeholder(&'a str),
}

/// Split a template into literal text and placeholders. A placeholder is `{{` up to the next
/// `}}`; a `{{` without a `}}` after it is text.
fn parse(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            break;
        };
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        pieces.push(Piece::Placeholder(&after_open[..close]));
        rest = &after_open[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    pieces
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Lead,
    Input,
}

#[derive(Debug)]
struct Path<'a> {
    root: Root,
    segments: Vec<&'a str>,
}

impl<'a> Path<'a> {
    fn parse(inner: &'a str) -> Result<Path<'a>, TemplateError> {
        let trimmed = inner.trim();
        let (root, rest) = match trimmed.split_once('.') {
            Some((root, rest)) => (root, Some(rest)),
            None => (trimmed, None),
        };
        let root = match root {
            "lead" => Root::Lead,
            "input" => Root::Input,
            _ => return Err(TemplateError::UnknownPlaceholder(trimmed.to_string())),
        };
        let segments = rest.map(|r| r.split('.').collect()).unwrap_or_default();
        Ok(Path { root, segments })
    }
}

/// Follow `segments` down from `value`. Trying several splits of a dotted path stays cheap: in a
/// tree, the node a walk reaches fixes how many segments were consumed, so each node of the value
/// is visited at most once per lookup.
fn walk<'v>(value: &'v Value, segments: &[&str]) -> Option<&'v Value> {
    if segments.is_empty() {
        return Some(value);
    }
    match value {
        Value::Array(items) => {
            let seg = segments[0];
            if seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let item = items.get(seg.parse::<usize>().ok()?)?;
            walk(item, &segments[1..])
        }
        Value::Object(map) => {
            // Longest key first: `attributes.linkedin.url` prefers a key "linkedin.url".
            for take in (1..=segments.len()).rev() {
                let key = segments[..take].join(".");
                if let Some(child) = map.get(&key) {
                    if let Some(found) = walk(child, &segments[take..]) {
                        return Some(found);
                    }
                }
            }
            None
        }
        _ => None,
    }
}

/// `text` percent-encoded as [`render_url`] encodes placeholder values.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    percent_encode_into(text, &mut out);
    out
}

/// Percent-encode every byte but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
fn percent_encode_into(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use puffle_domain::LeadType;
    use serde_json::{json, Map};

    fn lead() -> Lead {
        let mut attributes = Map::new();
        attributes.insert("linkedin.url".into(), json!("https://linkedin.com/in/ann"));
        attributes.insert(
            "score card".into(),
            json!({"tags": ["a", "b"], "total": 42}),
        );
        attributes.insert("nothing".into(), Value::Null);
        Lead {
            id: "lead-1".into(),
            kind: LeadType::Person,
            fields: serde_json::from_value(json!({
                "name": {"full": "Ann Lee-Smith", "first": "Ann"},
                "company": {"name": "Acme & Co", "domain": "acme.com"},
                "contacts": [{"type": "email", "value": "ann+x@acme.com"},
                             {"type": "phone", "value": "+1 555 0100"}],
                "size": 250,
            }))
            .unwrap(),
            attributes,
            lists: vec![],
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    fn ctx() -> Context {
        Context::new(
            &lead(),
            &json!({"country": "fr", "ids": [7, 8], "nil": null}),
        )
    }

    #[test]
    fn text_substitutes_lead_and_input_paths() {
        let c = ctx();
        assert_eq!(
            render_text("Hi {{lead.name.full}} of {{ lead.company.name }}!", &c).unwrap(),
            "Hi Ann Lee-Smith of Acme & Co!"
        );
        assert_eq!(
            render_text(
                "{{lead.contacts.1.value}}|{{input.country}}|{{input.ids.1}}",
                &c
            )
            .unwrap(),
            "+1 555 0100|fr|8"
        );
        assert_eq!(
            render_text("{{lead.id}}/{{lead.type}}", &c).unwrap(),
            "lead-1/person"
        );
    }

    #[test]
    fn non_string_values_are_compact_json() {
        let c = ctx();
        assert_eq!(render_text("{{lead.size}}", &c).unwrap(), "250");
        assert_eq!(
            render_text("{{lead.attributes.score card}}", &c).unwrap(),
            r#"{"tags":["a","b"],"total":42}"#
        );
        assert_eq!(render_text("{{input.ids}}", &c).unwrap(), "[7,8]");
    }

    #[test]
    fn attribute_keys_may_contain_dots_and_spaces() {
        let c = ctx();
        assert_eq!(
            render_text("{{lead.attributes.linkedin.url}}", &c).unwrap(),
            "https://linkedin.com/in/ann"
        );
        assert_eq!(
            render_text("{{lead.attributes.score card.tags.0}}", &c).unwrap(),
            "a"
        );
        // A shorter key that leads to a dead end does not hide a longer one, and vice versa.
        let c = Context::from_values(
            json!({"a": {"x": 1}, "a.b": {"c": 2}, "p.q": {"z": 3}, "p": {"q": {"r": 4}}}),
            json!({}),
        );
        assert_eq!(render_text("{{lead.a.b.c}}", &c).unwrap(), "2");
        assert_eq!(render_text("{{lead.a.x}}", &c).unwrap(), "1");
        assert_eq!(render_text("{{lead.p.q.z}}", &c).unwrap(), "3");
        assert_eq!(render_text("{{lead.p.q.r}}", &c).unwrap(), "4");
    }

    #[test]
    fn urls_percent_encode_values_but_keep_unreserved_characters() {
        let c = ctx();
        assert_eq!(
            render_url(
                "https://api.example.com/p/{{lead.company.name}}?email={{lead.contacts.0.value}}&n={{lead.name.full}}",
                &c
            )
            .unwrap(),
            "https://api.example.com/p/Acme%20%26%20Co?email=ann%2Bx%40acme.com&n=Ann%20Lee-Smith"
        );
        let c = Context::from_values(json!({"v": "a/b?c#d=e~f_g.h ü"}), json!({}));
        assert_eq!(
            render_url("x/{{lead.v}}", &c).unwrap(),
            "x/a%2Fb%3Fc%23d%3De~f_g.h%20%C3%BC"
        );
        // The template's own text is not encoded.
        assert_eq!(
            render_url("https://h/a b?q=1", &c).unwrap(),
            "https://h/a b?q=1"
        );
    }

    #[test]
    fn missing_and_null_values_are_listed_once_each() {
        let c = ctx();
        let err = render_text(
            "{{lead.title}} {{lead.attributes.nothing}} {{ lead.title }} {{lead.contacts.9.value}} {{input.nil}} {{lead.name.full}}",
            &c,
        )
        .unwrap_err();
        assert_eq!(
            err,
            TemplateError::Missing(vec![
                "lead.title".into(),
                "lead.attributes.nothing".into(),
                "lead.contacts.9.value".into(),
                "input.nil".into(),
            ])
        );
        assert_eq!(
            err.to_string(),
            "no value for {{lead.title}}, {{lead.attributes.nothing}}, {{lead.contacts.9.value}}, {{input.nil}}"
        );
        // Index segments only index arrays; keys never index into strings.
        for path in [
            "lead.contacts.x",
            "lead.contacts.-1",
            "lead.name.full.0",
            "lead.nope",
        ] {
            let t = format!("{{{{{path}}}}}");
            assert!(
                matches!(render_url(&t, &c), Err(TemplateError::Missing(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn unknown_roots_are_errors() {
        let c = ctx();
        for t in [
            "{{foo}}",
            "{{ lead2.name }}",
            "{{}}",
            "{{ }}",
            "{{{lead.name.full}}}",
        ] {
            assert!(
                matches!(
                    render_text(t, &c),
                    Err(TemplateError::UnknownPlaceholder(_))
                ),
                "{t}"
            );
            assert!(validate(t).is_err(), "{t}");
        }
        assert_eq!(
            validate("x {{foo.bar}}").unwrap_err().to_string(),
            "unknown placeholder {{foo.bar}}: placeholders start with `lead.` or `input.`"
        );
        assert_eq!(validate("{{lead.anything.at.all}} {{input.x}}"), Ok(()));
    }

    #[test]
    fn text_without_placeholders_or_with_an_unclosed_one_is_literal() {
        let c = ctx();
        for t in [
            "",
            "plain",
            "a } b }} c",
            "{{ lead.name.full",
            "x {{",
            "{ {lead.id} }",
        ] {
            assert_eq!(render_text(t, &c).unwrap(), t);
            assert_eq!(render_url(t, &c).unwrap(), t);
            assert_eq!(validate(t), Ok(()));
        }
        assert_eq!(
            render_text("{{lead.id}} and {{ unclosed", &c).unwrap(),
            "lead-1 and {{ unclosed"
        );
    }

    #[test]
    fn json_bodies_template_string_values_only() {
        let c = ctx();
        let body = json!({
            "{{lead.id}}": "{{lead.name.first}}",
            "nested": [{"email": "{{lead.contacts.0.value}}"}, 5, true, null],
            "size": "{{lead.size}}",
            "n": 1.5
        });
        assert_eq!(
            render_json(&body, &c).unwrap(),
            json!({
                "{{lead.id}}": "Ann",
                "nested": [{"email": "ann+x@acme.com"}, 5, true, null],
                "size": "250",
                "n": 1.5
            })
        );
        let err = render_json(
            &json!({"a": "{{lead.title}}", "b": ["{{lead.industry}}", "{{lead.title}}"]}),
            &c,
        )
        .unwrap_err();
        assert_eq!(
            err,
            TemplateError::Missing(vec!["lead.title".into(), "lead.industry".into()])
        );
        assert!(validate_json(&json!({"a": [{"b": "{{nope}}"}]})).is_err());
        assert!(validate_json(&json!({"{{nope}}": 1})).is_ok());
    }

    #[test]
    fn placeholders_can_be_replaced_without_a_lead() {
        assert_eq!(
            render_placeholders_as("https://{{lead.domain}}/x?{{ input.q }}", "v").unwrap(),
            "https://v/x?v"
        );
        assert!(render_placeholders_as("{{x}}", "v").is_err());
    }
}

/// Properties of the template language, which users write by hand in `custom_http` and
/// `custom_ai` inputs.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn decode(s: &str) -> Option<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }

    /// Templates mixing braces, dots and placeholder-like text.
    fn template() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                "\\PC{0,6}",
                Just("{{".to_string()),
                Just("}}".to_string()),
                "\\{\\{ ?(lead|input|leads|x)(\\.[a-z0-9.]{0,8})? ?\\}\\}",
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    fn context(value: String) -> Context {
        Context::from_values(
            json!({"name": {"full": value.clone()}, "contacts": [{"value": value.clone()}],
                   "attributes": {"a.b": value.clone(), "n": 3}}),
            json!({"v": value, "nested": {"x": [1, null]}}),
        )
    }

    proptest! {
        #[test]
        fn rendering_never_panics(t in template(), v in "\\PC{0,10}") {
            let ctx = context(v);
            let _ = render_text(&t, &ctx);
            let _ = render_url(&t, &ctx);
            let _ = render_json(&json!({"k": t.clone(), "a": [t.clone()]}), &ctx);
        }

        #[test]
        fn validation_agrees_with_shape_rendering(t in template()) {
            prop_assert_eq!(validate(&t).is_ok(), render_placeholders_as(&t, "x").is_ok());
        }

        #[test]
        fn text_without_placeholders_is_itself(t in "[^{]{0,30}", v in "\\PC{0,10}") {
            prop_assert_eq!(render_text(&t, &context(v.clone())), Ok(t.clone()));
            prop_assert_eq!(render_placeholders_as(&t, "x"), Ok(t));
        }

        #[test]
        fn text_values_are_inserted_verbatim(pre in "[^{]{0,8}", post in "[^{}]{0,8}", v in "\\PC{1,12}") {
            let t = format!("{pre}{{{{ input.v }}}}{post}");
            prop_assert_eq!(render_text(&t, &context(v.clone())), Ok(format!("{pre}{v}{post}")));
        }

        #[test]
        fn url_values_are_encoded_and_decode_back(v in "\\PC{1,20}") {
            let url = render_url("https://x.example/{{lead.name.full}}?q={{input.v}}", &context(v.clone()))
                .expect("present values render");
            let (path, query) = url["https://x.example/".len()..].split_once("?q=").expect("shape kept");
            // No value can add a path segment, a parameter or a fragment.
            for part in [path, query] {
                prop_assert!(!part.contains(['/', '?', '&', '#', '=', ' ']), "{}", part);
                prop_assert_eq!(decode(part), Some(v.clone()));
            }
        }

        #[test]
        fn missing_values_are_reported_not_rendered(key in "[a-z]{1,8}") {
            prop_assume!(key != "v" && key != "nested");
            let t = format!("a{{{{input.{key}}}}}b");
            prop_assert_eq!(
                render_text(&t, &context("x".into())),
                Err(TemplateError::Missing(vec![format!("input.{key}")]))
            );
        }
    }
}
