//! `work_email_patterns` (person): the addresses a person most likely has at their company,
//! most common pattern first. Guesses only: nothing is sent or looked up.
//!
//! - Name: `name.first` + `name.last` when both are set and are more than the naive split of
//!   `name.full` (first word, last word) that the lead API stores by default; otherwise
//!   `name.full` parsed by `name_parse`, which knows prefixes, suffixes and particles
//!   (`Dr. Jan van der Berg Jr.` → `jan.vanderberg`).
//! - Domain: `company.domain`, else `domain`, else the first email whose provider is neither free
//!   nor disposable.
//! - Parts are lowercased and folded to ASCII (`é` → `e`, `ß` → `ss`); spaces, apostrophes,
//!   hyphens and letters without a folding are dropped (`O'Neil` → `oneil`). When a part has a
//!   hyphen (`Smith-Jones`), `first.smith-jones` is added last: some companies keep the hyphen.
//!
//! A name that folds to nothing (e.g. written only in CJK script) is a miss, not missing input:
//! the lead has a name, it just yields no ASCII address.

use puffle_domain::lead::{parse_domain, Lead, Name};
use serde_json::{json, Value};

use super::company_domain::work_email_domains;
use super::email_check::syntax_valid;
use super::name_parse::{parse_name, parse_parts};
use super::object_schema;
use crate::Outcome;

pub fn run(lead: &Lead, _input: &Value) -> Outcome {
    let Some((first, last)) = first_and_last(&lead.fields.name) else {
        return Outcome::MissingInput;
    };
    let Some(domain) = company_domain(lead) else {
        return Outcome::MissingInput;
    };
    let candidates = candidates(&first, &last, &domain);
    if candidates.is_empty() {
        return Outcome::Miss;
    }
    Outcome::Hit(json!({ "candidates": candidates }))
}

pub fn input_schema() -> Value {
    object_schema(json!({}), &[], false)
}

pub fn output_schema() -> Value {
    object_schema(
        json!({"candidates": {"type": "array", "items": {"type": "string"}}}),
        &["candidates"],
        true,
    )
}

/// The person's first and last name, as written (folding comes later).
fn first_and_last(name: &Name) -> Option<(String, String)> {
    let explicit = match (&name.first, &name.last) {
        (Some(_), Some(_)) if !is_naive_split_of_full(name) => {
            parse_parts(name.first.as_deref(), name.last.as_deref())
        }
        _ => None,
    };
    let parsed = explicit.or_else(|| parse_name(name))?;
    Some((parsed.first?, parsed.last?))
}

/// Whether first/last are just the first and last word of `name.full` (or, for `Last, First`,
/// the text before the comma and the first word after it): then they carry nothing `name.full`
/// does not, and parsing `name.full` reads it better.
fn is_naive_split_of_full(name: &Name) -> bool {
    let Some(full) = name.full.as_deref() else {
        return false;
    };
    let (first, last) = match full.split_once(',') {
        Some((last, first)) => (first.split_whitespace().next(), Some(last.trim())),
        None => {
            let mut words = full.split_whitespace();
            let first = words.next();
            (first, words.last())
        }
    };
    name.first.as_deref().map(str::trim) == first && name.last.as_deref().map(str::trim) == last
}

fn company_domain(lead: &Lead) -> Option<String> {
    let f = &lead.fields;
    [&f.company.domain, &f.domain]
        .into_iter()
        .flatten()
        .find_map(|d| parse_domain(d))
        .or_else(|| work_email_domains(lead).next())
}

/// The candidate addresses, most common pattern first, without duplicates and without any that
/// would not be a valid address (a local part over 64 octets, say).
fn candidates(first: &str, last: &str, domain: &str) -> Vec<String> {
    let (f, l) = (fold(first, false), fold(last, false));
    let (Some(fi), Some(li)) = (f.chars().next(), l.chars().next()) else {
        return vec![];
    };
    let mut locals = vec![
        format!("{f}.{l}"),
        format!("{f}{l}"),
        format!("{fi}{l}"),
        f.clone(),
        format!("{f}{li}"),
        format!("{fi}.{l}"),
        format!("{l}.{f}"),
        format!("{f}_{l}"),
        l.clone(),
        format!("{l}{fi}"),
        format!("{f}-{l}"),
        format!("{l}{f}"),
    ];
    let (fh, lh) = (fold(first, true), fold(last, true));
    if fh != f || lh != l {
        locals.push(format!("{fh}.{lh}"));
    }
    let mut out: Vec<String> = Vec::with_capacity(locals.len());
    for local in locals {
        let email = format!("{local}@{domain}");
        if !out.contains(&email) && syntax_valid(&email) {
            out.push(email);
        }
    }
    out
}

/// Lowercase ASCII letters and digits of `s`, accented Latin letters folded, all else dropped.
/// With `keep_hyphens`, inner hyphens stay (one at a time, never at either end).
fn fold(s: &str, keep_hyphens: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if let Some(folded) = fold_char(c) {
            out.push_str(folded);
        } else if keep_hyphens
            && matches!(c, '-' | '‐' | '‑')
            && !out.is_empty()
            && !out.ends_with('-')
        {
            out.push('-');
        }
    }
    if out.ends_with('-') {
        out.pop();
    }
    out
}

/// A small table for the Latin letters names use; other scripts would need transliteration,
/// which is out of scope.
fn fold_char(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::person;
    use super::*;
    use proptest::prelude::*;

    fn patterns(fields: Value) -> Vec<String> {
        match run(&person(fields.clone()), &json!({})) {
            Outcome::Hit(v) => serde_json::from_value(v["candidates"].clone()).unwrap_or_default(),
            other => panic!("{fields}: expected a hit, got {other:?}"),
        }
    }

    #[test]
    fn most_common_patterns_first() {
        let got = patterns(json!({"name": {"full": "Ann Lee"}, "company": {"domain": "acme.com"}}));
        let want = [
            "ann.lee", "annlee", "alee", "ann", "annl", "a.lee", "lee.ann", "ann_lee", "lee",
            "leea", "ann-lee", "leeann",
        ];
        assert_eq!(got, want.map(|l| format!("{l}@acme.com")));
    }

    #[test]
    fn names_are_folded_to_ascii() {
        let first = |fields: Value| patterns(fields).first().cloned().unwrap_or_default();
        let at = |name: &str| json!({"name": {"full": name}, "domain": "acme.de"});
        assert_eq!(first(at("José Müller")), "jose.muller@acme.de");
        assert_eq!(first(at("Jürgen Weiß")), "jurgen.weiss@acme.de");
        assert_eq!(first(at("Søren Kierkegård")), "soren.kierkegard@acme.de");
        assert_eq!(first(at("Łukasz Żółć")), "lukasz.zolc@acme.de");
        assert_eq!(first(at("Ægir Þórsson")), "aegir.thorsson@acme.de");
        assert_eq!(first(at("ANN O'NEIL")), "ann.oneil@acme.de");
        assert_eq!(
            first(at("Dr. Jan van der Berg Jr.")),
            "jan.vanderberg@acme.de"
        );
        assert_eq!(first(at("Jean-Luc Picard")), "jeanluc.picard@acme.de");
    }

    #[test]
    fn hyphenated_names_also_get_the_hyphen_kept_pattern_last() {
        let got = patterns(json!({"name": {"full": "José García-López"}, "domain": "acme.es"}));
        assert_eq!(
            got.first().map(String::as_str),
            Some("jose.garcialopez@acme.es")
        );
        assert_eq!(
            got.last().map(String::as_str),
            Some("jose.garcia-lopez@acme.es")
        );
        assert_eq!(got.len(), 13);
        // Without a hyphen in the name there is no extra pattern.
        assert_eq!(
            patterns(json!({"name": {"full": "Ann Lee"}, "domain": "acme.es"})).len(),
            12
        );
    }

    #[test]
    fn explicit_first_and_last_win_over_a_different_full_name() {
        let got = patterns(json!({
            "name": {"full": "Robert Smith", "first": "Bob", "last": "Smith"},
            "domain": "acme.com"}));
        assert_eq!(got[0], "bob.smith@acme.com");
        // Without a full name, the parts are used as they are.
        let got = patterns(
            json!({"name": {"first": "Mary", "last": "de la Cruz"}, "domain": "acme.com"}),
        );
        assert_eq!(got[0], "mary.delacruz@acme.com");
        // The lead API's naive split of "Dr. Ann Lee" is first "Dr.", last "Lee": parse the full name.
        let got = patterns(json!({
            "name": {"full": "Dr. Ann Lee", "first": "Dr.", "last": "Lee"}, "domain": "acme.com"}));
        assert_eq!(got[0], "ann.lee@acme.com");
        let got = patterns(json!({
            "name": {"full": "van der Berg, Jan", "first": "Jan", "last": "van der Berg"},
            "domain": "acme.com"}));
        assert_eq!(got[0], "jan.vanderberg@acme.com");
    }

    #[test]
    fn the_domain_comes_from_company_then_lead_then_a_work_email() {
        let name = json!({"full": "Ann Lee"});
        let first = |fields: Value| patterns(fields)[0].clone();
        assert_eq!(
            first(
                json!({"name": name, "company": {"domain": "https://www.Acme.com/x"},
                         "domain": "other.com"})
            ),
            "ann.lee@acme.com"
        );
        assert_eq!(
            first(json!({"name": name, "domain": "other.com"})),
            "ann.lee@other.com"
        );
        assert_eq!(
            first(json!({"name": name, "contacts": [
                {"type": "email", "value": "ann@gmail.com"},
                {"type": "email", "value": "ann@guerrillamail.com"},
                {"type": "email", "value": "a.lee@corp.io"}]})),
            "ann.lee@corp.io"
        );
    }

    #[test]
    fn missing_name_or_domain_is_missing_input() {
        for fields in [
            json!({"domain": "acme.com"}),
            json!({"name": {"full": "Cher"}, "domain": "acme.com"}),
            json!({"name": {"first": "Ann"}, "domain": "acme.com"}),
            json!({"name": {"full": "Mr. Smith"}, "domain": "acme.com"}),
            json!({"name": {"full": "Ann Lee"}}),
            json!({"name": {"full": "Ann Lee"}, "domain": "nope",
                   "contacts": [{"type": "email", "value": "ann@gmail.com"}]}),
        ] {
            assert_eq!(
                run(&person(fields.clone()), &json!({})),
                Outcome::MissingInput,
                "{fields}"
            );
        }
    }

    #[test]
    fn names_without_ascii_letters_are_a_miss() {
        let lead = person(json!({"name": {"full": "王 小明"}, "domain": "acme.cn"}));
        assert_eq!(run(&lead, &json!({})), Outcome::Miss);
    }

    #[test]
    fn overlong_local_parts_are_left_out() {
        let long = "a".repeat(40);
        let got = patterns(json!({"name": {"full": format!("Ann {long}")}, "domain": "acme.com"}));
        assert!(got.contains(&format!("ann.{long}@acme.com")));
        let huge = "b".repeat(70);
        let got = patterns(json!({"name": {"full": format!("Ann {huge}")}, "domain": "acme.com"}));
        assert_eq!(got, ["ann@acme.com", "annb@acme.com"]);
    }

    #[test]
    fn initials_that_repeat_a_pattern_appear_once() {
        let got = patterns(json!({"name": {"first": "J", "last": "Lee"}, "domain": "acme.com"}));
        assert_eq!(got.iter().filter(|e| *e == "jlee@acme.com").count(), 1);
        assert_eq!(got[0], "j.lee@acme.com");
    }

    #[test]
    fn fold_keeps_hyphens_only_inside() {
        assert_eq!(fold("-Smith--Jones-", true), "smith-jones");
        assert_eq!(fold("-Smith--Jones-", false), "smithjones");
        assert_eq!(fold("王", true), "");
    }

    proptest! {
        #[test]
        fn every_candidate_is_a_valid_lowercase_ascii_address(
            first in "\\PC{0,20}", last in "\\PC{0,20}",
        ) {
            let lead = person(json!({"name": {"first": first, "last": last}, "domain": "acme.com"}));
            if let Outcome::Hit(v) = run(&lead, &json!({})) {
                let list = v["candidates"].as_array().cloned().unwrap_or_default();
                prop_assert!(!list.is_empty());
                for c in list {
                    let c = c.as_str().unwrap_or_default();
                    prop_assert!(syntax_valid(c), "{}", c);
                    prop_assert!(c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()
                        || b".-_@".contains(&b)), "{}", c);
                }
            }
        }
    }
}
