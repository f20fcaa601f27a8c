//! Leads: what a client may send, what we store, how two leads are recognised as one, and how a
//! duplicate's new facts fill the gaps of the lead that already exists.

use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::{Invalid, LeadType};

/// A lead's base fields as stored (everything but id, type, attributes, lists and timestamps).
/// Every field serializes, `null` when unknown, so the response shape never loses a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LeadFields {
    pub name: Name,
    pub title: Option<String>,
    pub company: Company,
    pub location: Location,
    pub socials: Vec<Social>,
    pub contacts: Vec<Contact>,
    pub domain: Option<String>,
    pub industry: Option<String>,
    pub size: Option<Value>,
    pub raw: Option<Value>,
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Name {
    pub full: Option<String>,
    pub short: Option<String>,
    pub aliases: Vec<String>,
    pub first: Option<String>,
    pub last: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Company {
    pub name: Option<String>,
    pub id: Option<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Location {
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub raw: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Social {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub id: String,
    pub provider: Option<String>,
    pub external_id: Option<String>,
}

/// A lead as a client sends it to create, import or update. Lenient where the hosted API is
/// (`name`, `company` and `location` may be plain strings), strict on types otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadInput {
    #[serde(rename = "type")]
    pub kind: Option<LeadType>,
    #[serde(default, deserialize_with = "str_or_object")]
    pub name: Option<Name>,
    pub title: Option<String>,
    #[serde(default, deserialize_with = "str_or_object")]
    pub company: Option<Company>,
    #[serde(default, deserialize_with = "str_or_object")]
    pub location: Option<Location>,
    pub socials: Option<Vec<Social>>,
    pub contacts: Option<Vec<Contact>>,
    pub domain: Option<String>,
    pub industry: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub size: Option<Value>,
    pub attributes: Option<Map<String, Value>>,
    pub raw: Option<Value>,
    pub sources: Option<Vec<SourceInput>>,
    pub list_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInput {
    pub id: Option<String>,
    pub provider: Option<String>,
    pub external_id: Option<String>,
}

/// Things that can be given as a plain string: the string lands in one field of the object.
trait FromPlainString {
    fn from_plain(s: String) -> Self;
}

impl FromPlainString for Name {
    fn from_plain(s: String) -> Self {
        Name {
            full: Some(s),
            ..Name::default()
        }
    }
}

impl FromPlainString for Company {
    fn from_plain(s: String) -> Self {
        Company {
            name: Some(s),
            ..Company::default()
        }
    }
}

impl FromPlainString for Location {
    fn from_plain(s: String) -> Self {
        Location {
            raw: Some(s),
            ..Location::default()
        }
    }
}

fn str_or_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromPlainString + DeserializeOwned,
{
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(T::from_plain(s))),
        v @ Value::Object(_) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        other => Err(D::Error::custom(format!(
            "invalid type: {}, expected a string or an object",
            json_kind(&other)
        ))),
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v @ (Value::String(_) | Value::Number(_)) => Ok(Some(v)),
        other => Err(D::Error::custom(format!(
            "invalid type: {}, expected a string or a number",
            json_kind(&other)
        ))),
    }
}

pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A lead ready to be stored: validated and normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLead {
    pub kind: LeadType,
    pub fields: LeadFields,
    pub attributes: Map<String, Value>,
    pub list_ids: Vec<String>,
}

impl LeadInput {
    /// Validate a create/import body. `type` is required.
    pub fn into_new_lead(self, new_id: impl FnMut() -> String) -> Result<NewLead, Invalid> {
        let kind = self
            .kind
            .ok_or_else(|| Invalid::new("type", "is required (\"person\" or \"company\")"))?;
        let attributes = self.attributes.clone().unwrap_or_default();
        let list_ids = self.list_ids.clone().unwrap_or_default();
        let mut fields = LeadFields::default();
        self.apply_to(&mut fields, new_id)?;
        fields.derive_name_parts(kind);
        Ok(NewLead {
            kind,
            fields,
            attributes,
            list_ids,
        })
    }

    /// Set every field this input carries on `fields`, normalized. Fields it does not carry are
    /// left alone (that is what PATCH needs; create starts from empty fields).
    pub fn apply_to(
        self,
        fields: &mut LeadFields,
        mut new_id: impl FnMut() -> String,
    ) -> Result<(), Invalid> {
        if let Some(name) = self.name {
            fields.name = clean_name(name);
        }
        if let Some(title) = self.title {
            fields.title = non_empty(title);
        }
        if let Some(mut company) = self.company {
            company.name = company.name.and_then(non_empty);
            company.id = company.id.and_then(non_empty);
            company.domain = optional_domain(company.domain).map_err(|e| e.within("company"))?;
            fields.company = company;
        }
        if let Some(loc) = self.location {
            fields.location = Location {
                city: loc.city.and_then(non_empty),
                state: loc.state.and_then(non_empty),
                country: loc.country.and_then(non_empty),
                raw: loc.raw.and_then(non_empty),
            };
        }
        if let Some(socials) = self.socials {
            fields.socials = socials
                .into_iter()
                .enumerate()
                .map(|(i, s)| clean_social(s).map_err(|e| e.within(&format!("socials[{i}]"))))
                .collect::<Result<_, _>>()?;
        }
        if let Some(contacts) = self.contacts {
            fields.contacts = contacts
                .into_iter()
                .enumerate()
                .map(|(i, c)| clean_contact(c).map_err(|e| e.within(&format!("contacts[{i}]"))))
                .collect::<Result<_, _>>()?;
        }
        if self.domain.is_some() {
            fields.domain = optional_domain(self.domain)?;
        }
        if let Some(industry) = self.industry {
            fields.industry = non_empty(industry);
        }
        if self.size.is_some() {
            fields.size = self.size;
        }
        if self.raw.is_some() {
            fields.raw = self.raw;
        }
        if let Some(sources) = self.sources {
            fields.sources = sources
                .into_iter()
                .map(|s| Source {
                    id: s.id.and_then(non_empty).unwrap_or_else(&mut new_id),
                    provider: s.provider.and_then(non_empty),
                    external_id: s.external_id.and_then(non_empty),
                })
                .collect();
        }
        Ok(())
    }
}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else if t.len() == s.len() {
        Some(s)
    } else {
        Some(t.to_string())
    }
}

fn clean_name(n: Name) -> Name {
    Name {
        full: n.full.and_then(non_empty),
        short: n.short.and_then(non_empty),
        aliases: n.aliases.into_iter().filter_map(non_empty).collect(),
        first: n.first.and_then(non_empty),
        last: n.last.and_then(non_empty),
    }
}

fn optional_domain(d: Option<String>) -> Result<Option<String>, Invalid> {
    match d.and_then(non_empty) {
        None => Ok(None),
        Some(d) => parse_domain(&d)
            .map(Some)
            .ok_or_else(|| Invalid::new("domain", format!("{d:?} is not a domain name"))),
    }
}

fn clean_social(s: Social) -> Result<Social, Invalid> {
    let url = non_empty(s.url).ok_or_else(|| Invalid::new("url", "must not be empty"))?;
    let kind = s.kind.and_then(non_empty).map(|k| k.to_lowercase());
    let kind = kind.or_else(|| linkedin_key(&url).map(|_| "linkedin".to_string()));
    Ok(Social { kind, url })
}

fn clean_contact(c: Contact) -> Result<Contact, Invalid> {
    let value = non_empty(c.value).ok_or_else(|| Invalid::new("value", "must not be empty"))?;
    let kind = c.kind.and_then(non_empty).map(|k| k.to_lowercase());
    let is_email = match &kind {
        Some(k) => k.contains("email"),
        None => value.contains('@'),
    };
    if is_email {
        let email = normalize_email(&value)
            .ok_or_else(|| Invalid::new("value", format!("{value:?} is not an email address")))?;
        let kind = kind.or_else(|| Some("email".to_string()));
        return Ok(Contact { kind, value: email });
    }
    Ok(Contact { kind, value })
}

/// Lowercased, trimmed email when it has the shape `local@domain.tld`; `None` otherwise.
pub fn normalize_email(s: &str) -> Option<String> {
    let s = s.trim();
    let (local, domain) = s.rsplit_once('@')?;
    let ok = !local.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && parse_domain(domain).as_deref() == Some(&domain.to_lowercase());
    ok.then(|| s.to_lowercase())
}

/// A domain name from whatever a user pasted: `https://www.Acme.com/about` → `acme.com`.
/// `None` when what is left is not a plausible host name with at least one dot.
pub fn parse_domain(s: &str) -> Option<String> {
    let mut d = s.trim().to_lowercase();
    if let Some(i) = d.find("://") {
        d = d[i + 3..].to_string();
    }
    if let Some(i) = d.find(['/', '?', '#']) {
        d.truncate(i);
    }
    if let Some(i) = d.rfind('@') {
        d = d[i + 1..].to_string();
    }
    if let Some(i) = d.find(':') {
        let port = &d[i + 1..];
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        d.truncate(i);
    }
    let d = d.strip_suffix('.').unwrap_or(&d);
    let d = d.strip_prefix("www.").unwrap_or(d);
    let labels: Vec<&str> = d.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    let ok = labels.len() >= 2 && d.len() <= 253 && labels.iter().all(label_ok);
    ok.then(|| d.to_string())
}

/// `linkedin.com/in/<slug>` (or `/company/<slug>`) from any spelling of a LinkedIn profile URL.
pub fn linkedin_key(url: &str) -> Option<String> {
    let u = url.trim().to_lowercase();
    let u = u.split_once("://").map_or(u.as_str(), |(_, rest)| rest);
    let u = u.split(['?', '#']).next().unwrap_or(u);
    let (host, path) = u.split_once('/')?;
    let host = host.strip_prefix("www.").unwrap_or(host);
    let is_linkedin = host == "linkedin.com" || host.ends_with(".linkedin.com");
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let (section, slug) = (parts.next()?, parts.next()?);
    (is_linkedin && matches!(section, "in" | "company" | "pub" | "school"))
        .then(|| format!("linkedin.com/{section}/{slug}"))
}

impl LeadFields {
    /// Reset one field (by its JSON name) to empty; `false` if no such field can be cleared.
    pub fn clear(&mut self, field: &str) -> bool {
        match field {
            "name" => self.name = Name::default(),
            "title" => self.title = None,
            "company" => self.company = Company::default(),
            "location" => self.location = Location::default(),
            "socials" => self.socials.clear(),
            "contacts" => self.contacts.clear(),
            "domain" => self.domain = None,
            "industry" => self.industry = None,
            "size" => self.size = None,
            "raw" => self.raw = None,
            "sources" => self.sources.clear(),
            _ => return false,
        }
        true
    }

    /// Fill in `name.full` from first/last, or first/last from `name.full`, when absent.
    pub fn derive_name_parts(&mut self, kind: LeadType) {
        let n = &mut self.name;
        if n.full.is_none() {
            let joined = [n.first.as_deref(), n.last.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            n.full = non_empty(joined);
        }
        if kind == LeadType::Company || n.first.is_some() || n.last.is_some() {
            return;
        }
        let Some(full) = n.full.clone() else { return };
        if let Some((last, first)) = full.split_once(',') {
            n.first = first.split_whitespace().next().map(str::to_string);
            n.last = non_empty(last.to_string());
            return;
        }
        let words: Vec<&str> = full.split_whitespace().collect();
        n.first = words.first().map(|w| w.to_string());
        if words.len() >= 2 {
            n.last = words.last().map(|w| w.to_string());
        }
    }

    /// The keys under which two leads of one workspace are the same lead: a normalized LinkedIn
    /// URL, any email, a source's provider + external id, and for companies the domain.
    pub fn dedupe_keys(&self, kind: LeadType) -> Vec<String> {
        let mut keys = Vec::new();
        for s in &self.socials {
            if let Some(k) = linkedin_key(&s.url) {
                keys.push(format!("linkedin:{k}"));
            }
        }
        for c in self.contacts.iter().filter(|c| c.is_email()) {
            keys.push(format!("email:{}", c.value.to_lowercase()));
        }
        for s in &self.sources {
            if let (Some(p), Some(e)) = (&s.provider, &s.external_id) {
                keys.push(format!("source:{}:{e}", p.to_lowercase()));
            }
        }
        if kind == LeadType::Company {
            if let Some(d) = self.domain.as_ref().or(self.company.domain.as_ref()) {
                keys.push(format!("domain:{d}"));
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Merge a duplicate's fields in: what `self` lacks is taken from `other`, nothing set is
    /// overwritten; lists (socials, contacts, sources, aliases) gain the entries they lack.
    pub fn fill_from(&mut self, other: LeadFields) {
        fn fill<T>(slot: &mut Option<T>, v: Option<T>) {
            if slot.is_none() {
                *slot = v;
            }
        }
        fn union<T: PartialEq>(list: &mut Vec<T>, more: Vec<T>, same: impl Fn(&T, &T) -> bool) {
            for m in more {
                if !list.iter().any(|x| same(x, &m)) {
                    list.push(m);
                }
            }
        }
        let LeadFields {
            name,
            title,
            company,
            location,
            socials,
            contacts,
            domain,
            industry,
            size,
            raw,
            sources,
        } = other;
        fill(&mut self.name.full, name.full);
        fill(&mut self.name.short, name.short);
        fill(&mut self.name.first, name.first);
        fill(&mut self.name.last, name.last);
        union(&mut self.name.aliases, name.aliases, PartialEq::eq);
        fill(&mut self.title, title);
        fill(&mut self.company.name, company.name);
        fill(&mut self.company.id, company.id);
        fill(&mut self.company.domain, company.domain);
        fill(&mut self.location.city, location.city);
        fill(&mut self.location.state, location.state);
        fill(&mut self.location.country, location.country);
        fill(&mut self.location.raw, location.raw);
        union(&mut self.socials, socials, |a, b| {
            a.url == b.url
                || (linkedin_key(&a.url).is_some() && linkedin_key(&a.url) == linkedin_key(&b.url))
        });
        union(&mut self.contacts, contacts, |a, b| {
            a.value.eq_ignore_ascii_case(&b.value)
        });
        fill(&mut self.domain, domain);
        fill(&mut self.industry, industry);
        fill(&mut self.size, size);
        fill(&mut self.raw, raw);
        union(&mut self.sources, sources, |a, b| {
            a.provider == b.provider && a.external_id == b.external_id
        });
    }

    /// The text the lead filters search, lowercased, one string per filter.
    pub fn search_text(&self) -> SearchText {
        let lower = |s: Option<&String>| s.map(|s| s.to_lowercase()).unwrap_or_default();
        let mut name = lower(self.name.full.as_ref());
        for part in [&self.name.short, &self.name.first, &self.name.last]
            .into_iter()
            .flatten()
            .chain(&self.name.aliases)
        {
            name.push('\n');
            name.push_str(&part.to_lowercase());
        }
        let l = &self.location;
        let location = [&l.raw, &l.city, &l.state, &l.country]
            .into_iter()
            .flatten()
            .map(|s| s.to_lowercase())
            .collect::<Vec<_>>()
            .join("\n");
        let emails = self
            .contacts
            .iter()
            .filter(|c| c.is_email())
            .map(|c| c.value.to_lowercase())
            .collect::<Vec<_>>()
            .join("\n");
        let domain = [&self.domain, &self.company.domain]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        SearchText {
            name,
            title: lower(self.title.as_ref()),
            company: lower(self.company.name.as_ref()),
            domain,
            industry: lower(self.industry.as_ref()),
            location,
            emails,
        }
    }
}

impl Contact {
    pub fn is_email(&self) -> bool {
        self.kind.as_deref().is_some_and(|k| k.contains("email"))
    }
}

/// Lowercased text per searchable field, as stored beside the lead for `GET /api/leads` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchText {
    pub name: String,
    pub title: String,
    pub company: String,
    pub domain: String,
    pub industry: String,
    pub location: String,
    pub emails: String,
}

/// Merge `patch` into `attributes` by key; a key set to `null` is removed.
pub fn merge_attributes(attributes: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            attributes.remove(&k);
        } else {
            attributes.insert(k, v);
        }
    }
}

/// Add the attributes `attributes` lacks (dedupe never overwrites).
pub fn fill_attributes(attributes: &mut Map<String, Value>, more: Map<String, Value>) {
    for (k, v) in more {
        if !v.is_null() && attributes.get(&k).is_none_or(Value::is_null) {
            attributes.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("id{n}")
        }
    }

    fn new_lead(v: Value) -> Result<NewLead, Invalid> {
        serde_json::from_value::<LeadInput>(v)
            .unwrap()
            .into_new_lead(counter())
    }

    #[test]
    fn domains_are_normalized_or_refused() {
        assert_eq!(
            parse_domain("https://www.Acme.com/about?x=1"),
            Some("acme.com".into())
        );
        assert_eq!(parse_domain("acme.co.uk:8080"), Some("acme.co.uk".into()));
        assert_eq!(parse_domain("ann@acme.com"), Some("acme.com".into()));
        assert_eq!(parse_domain("bücher.de"), Some("bücher.de".into()));
        for bad in [
            "",
            "localhost",
            "acme..com",
            "-acme.com",
            "acme com.io",
            "acme.com:x",
        ] {
            assert_eq!(parse_domain(bad), None, "{bad}");
        }
    }

    #[test]
    fn linkedin_urls_share_one_key() {
        let k = Some("linkedin.com/in/ann-lee".to_string());
        assert_eq!(linkedin_key("https://www.linkedin.com/in/Ann-Lee/"), k);
        assert_eq!(linkedin_key("linkedin.com/in/ann-lee?trk=x"), k);
        assert_eq!(linkedin_key("http://uk.linkedin.com/in/ann-lee"), k);
        assert_eq!(linkedin_key("https://twitter.com/in/ann-lee"), None);
        assert_eq!(linkedin_key("https://linkedin.com/feed"), None);
    }

    #[test]
    fn plain_string_name_derives_first_and_last() {
        let lead = new_lead(json!({"type": "person", "name": "Ada  King Lovelace"})).unwrap();
        assert_eq!(lead.fields.name.full.as_deref(), Some("Ada  King Lovelace"));
        assert_eq!(lead.fields.name.first.as_deref(), Some("Ada"));
        assert_eq!(lead.fields.name.last.as_deref(), Some("Lovelace"));
        let lead = new_lead(json!({"type": "person", "name": "Lovelace, Ada"})).unwrap();
        assert_eq!(lead.fields.name.first.as_deref(), Some("Ada"));
        assert_eq!(lead.fields.name.last.as_deref(), Some("Lovelace"));
        let lead =
            new_lead(json!({"type": "person", "name": {"first": "Ada", "last": "L"}})).unwrap();
        assert_eq!(lead.fields.name.full.as_deref(), Some("Ada L"));
        let lead = new_lead(json!({"type": "company", "name": "Acme Inc"})).unwrap();
        assert_eq!(lead.fields.name.first, None);
    }

    #[test]
    fn type_is_required_and_fields_are_checked() {
        assert_eq!(new_lead(json!({"name": "x"})).unwrap_err().field, "type");
        let e =
            new_lead(json!({"type": "person", "contacts": [{"type": "email", "value": "nope"}]}))
                .unwrap_err();
        assert_eq!(e.field, "contacts[0].value");
        let e = new_lead(json!({"type": "company", "company": {"domain": "x"}})).unwrap_err();
        assert_eq!(e.field, "company.domain");
        assert!(serde_json::from_value::<LeadInput>(json!({"type": "robot"})).is_err());
        assert!(serde_json::from_value::<LeadInput>(json!({"name": 5})).is_err());
    }

    #[test]
    fn dedupe_keys_cover_linkedin_email_source_and_company_domain() {
        let lead = new_lead(json!({
            "type": "company", "domain": "https://Acme.com",
            "socials": [{"url": "https://www.linkedin.com/company/acme/"}],
            "contacts": [{"value": "Sales@Acme.com"}, {"type": "phone", "value": "+1 555"}],
            "sources": [{"provider": "Apollo", "externalId": "42"}]
        }))
        .unwrap();
        assert_eq!(
            lead.fields.dedupe_keys(lead.kind),
            vec![
                "domain:acme.com",
                "email:sales@acme.com",
                "linkedin:linkedin.com/company/acme",
                "source:apollo:42"
            ]
        );
        let person = new_lead(json!({"type": "person", "domain": "acme.com"})).unwrap();
        assert!(person.fields.dedupe_keys(person.kind).is_empty());
    }

    #[test]
    fn fill_from_never_overwrites() {
        let mut a = new_lead(json!({"type": "person", "name": "Ann Lee", "title": "CTO",
            "contacts": [{"value": "ann@acme.com"}]}))
        .unwrap()
        .fields;
        let b = new_lead(json!({"type": "person", "name": "Ann B. Lee", "title": "CEO",
            "industry": "Software", "contacts": [{"value": "ANN@acme.com"}, {"value": "ann@home.org"}]}))
        .unwrap()
        .fields;
        a.fill_from(b);
        assert_eq!(a.name.full.as_deref(), Some("Ann Lee"));
        assert_eq!(a.title.as_deref(), Some("CTO"));
        assert_eq!(a.industry.as_deref(), Some("Software"));
        let emails: Vec<_> = a.contacts.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(emails, ["ann@acme.com", "ann@home.org"]);
    }

    #[test]
    fn attribute_merge_removes_null_keys() {
        let mut attrs = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
        merge_attributes(
            &mut attrs,
            json!({"a": null, "c": 3}).as_object().unwrap().clone(),
        );
        assert_eq!(Value::Object(attrs.clone()), json!({"b": 2, "c": 3}));
        fill_attributes(
            &mut attrs,
            json!({"b": 9, "d": 4}).as_object().unwrap().clone(),
        );
        assert_eq!(Value::Object(attrs), json!({"b": 2, "c": 3, "d": 4}));
    }
}

/// A list a lead belongs to, as shown on the lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListRef {
    pub id: String,
    pub name: String,
}

/// A lead as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lead {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: LeadType,
    #[serde(flatten)]
    pub fields: LeadFields,
    pub attributes: Map<String, Value>,
    pub lists: Vec<ListRef>,
    pub created_at: String,
    pub updated_at: String,
}

/// A lead's membership in one list, with its list-scoped attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub id: String,
    pub attributes: Map<String, Value>,
    pub created_at: String,
}
