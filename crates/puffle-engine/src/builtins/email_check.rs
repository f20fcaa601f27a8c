//! `email_check` (person): is an address well-formed, and what kind of mailbox is it?
//!
//! Reads `input.email` when given (it wins), else the lead's first email contact. The syntax check
//! follows RFC 5321/5322 as mail servers practise it, plus RFC 6531 (UTF-8 letters allowed in the
//! local part and domain, matching the lead API's domain rule). IP-literal domains
//! (`user@[1.2.3.4]`) are refused: no real lead uses them. No DNS or SMTP is involved.

use std::collections::HashSet;
use std::sync::LazyLock;

use puffle_domain::lead::Lead;
use serde_json::{json, Value};

use super::{input_str, lead_emails, nullable_string, object_schema};
use crate::Outcome;

pub fn run(lead: &Lead, input: &Value) -> Outcome {
    match input_str(input, "email").or_else(|| lead_emails(lead).next()) {
        Some(email) => Outcome::Hit(check(email)),
        None => Outcome::MissingInput,
    }
}

pub fn input_schema() -> Value {
    object_schema(
        json!({"email": {"type": "string", "description": "Checked instead of the lead's email."}}),
        &[],
        false,
    )
}

pub fn output_schema() -> Value {
    object_schema(
        json!({
            "email": {"type": "string"},
            "syntaxValid": {"type": "boolean"},
            "domain": nullable_string(),
            "freeProvider": {"type": "boolean"},
            "disposable": {"type": "boolean"},
            "roleAccount": {"type": "boolean"},
        }),
        &[
            "email",
            "syntaxValid",
            "domain",
            "freeProvider",
            "disposable",
            "roleAccount",
        ],
        true,
    )
}

/// The result object for one address. An invalid address is still described: `domain` and the
/// provider flags when the part after the last `@` is a valid domain, `roleAccount` from the
/// local part whenever there is one.
fn check(raw: &str) -> Value {
    let email = raw.trim();
    let (local, domain) = match email.rsplit_once('@') {
        Some((l, d)) => (Some(l), Some(d)),
        None => (None, None),
    };
    let domain = domain.filter(|d| domain_valid(d)).map(str::to_lowercase);
    let syntax_valid = email.len() <= 254 && local.is_some_and(local_valid) && domain.is_some();
    let listed_in = |list: &HashSet<&str>| domain.as_deref().is_some_and(|d| listed(list, d));
    json!({
        "email": normalize(email),
        "syntaxValid": syntax_valid,
        "freeProvider": listed_in(&FREE_MAIL),
        "disposable": listed_in(&DISPOSABLE),
        "roleAccount": local.is_some_and(is_role_account),
        "domain": domain,
    })
}

/// Lowercased like every email the lead API stores, except a quoted local part, whose case may
/// matter to its server.
fn normalize(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) if local.starts_with('"') => {
            format!("{local}@{}", domain.to_lowercase())
        }
        _ => email.to_lowercase(),
    }
}

/// RFC 5321 §4.5.3.1.1: at most 64 octets; a dot-atom (no leading, trailing or double dots) or
/// a quoted string.
fn local_valid(local: &str) -> bool {
    if local.is_empty() || local.len() > 64 {
        return false;
    }
    if let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        return quoted_valid(inner);
    }
    local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// RFC 5322 `atext`, plus non-ASCII letters and digits (RFC 6531).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && c.is_alphanumeric())
}

/// The inside of a quoted local part: printable characters and spaces; `"` and `\` only escaped.
fn quoted_valid(inner: &str) -> bool {
    let printable =
        |c: char| c == ' ' || c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let ok = match c {
            '\\' => chars.next().is_some_and(printable),
            '"' => false,
            c => printable(c),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// At least two labels of letters, digits and inner hyphens (each 1–63 octets, 253 in all), and a
/// top-level label of two or more characters that is not all digits (so `1.2.3.4` is no domain).
pub(crate) fn domain_valid(domain: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    let tld_ok = domain
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().count() >= 2 && !tld.chars().all(|c| c.is_ascii_digit()));
    domain.len() <= 253 && domain.contains('.') && domain.split('.').all(label_ok) && tld_ok
}

/// Role mailboxes, compared on the local part before any `+tag`, lowercased, with `.`, `-` and
/// `_` removed, so `No-Reply`, `no_reply` and `noreply+x` all match `noreply`. Names that are
/// also given names (e.g. `dev`) are left out on purpose.
const ROLE_ACCOUNTS: &[&str] = &[
    "abuse",
    "accounting",
    "accounts",
    "admin",
    "administrator",
    "all",
    "billing",
    "bookings",
    "careers",
    "compliance",
    "contact",
    "contactus",
    "customercare",
    "customerservice",
    "customersupport",
    "devops",
    "donotreply",
    "enquiries",
    "enquiry",
    "everyone",
    "events",
    "feedback",
    "finance",
    "frontdesk",
    "hello",
    "help",
    "helpdesk",
    "hi",
    "hostmaster",
    "hr",
    "info",
    "information",
    "inquiries",
    "inquiry",
    "investors",
    "invoices",
    "ir",
    "it",
    "jobs",
    "legal",
    "mail",
    "mailerdaemon",
    "marketing",
    "media",
    "newsletter",
    "news",
    "noc",
    "noreply",
    "notifications",
    "office",
    "operations",
    "orders",
    "partners",
    "partnerships",
    "postmaster",
    "pr",
    "press",
    "privacy",
    "procurement",
    "purchasing",
    "reception",
    "recruiting",
    "recruitment",
    "reservations",
    "returns",
    "root",
    "sales",
    "security",
    "service",
    "services",
    "staff",
    "support",
    "sysadmin",
    "team",
    "tech",
    "webmaster",
    "welcome",
];

fn is_role_account(local: &str) -> bool {
    let base = local.split('+').next().unwrap_or(local).to_lowercase();
    let base: String = base
        .chars()
        .filter(|c| !matches!(c, '.' | '-' | '_'))
        .collect();
    ROLE_ACCOUNTS.contains(&base.as_str())
}

static FREE_MAIL: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| domain_list(include_str!("../../data/free_mail.txt")));
static DISPOSABLE: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| domain_list(include_str!("../../data/disposable.txt")));

/// One domain a line; blank lines and `#` comments skipped.
fn domain_list(text: &'static str) -> HashSet<&'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Whether `domain` or one of its parent domains is in `list` (`eu.mailinator.com` is disposable
/// because `mailinator.com` is). Expects a lowercased domain.
fn listed(list: &HashSet<&str>, domain: &str) -> bool {
    let mut d = domain;
    loop {
        if list.contains(d) {
            return true;
        }
        match d.split_once('.') {
            Some((_, parent)) if parent.contains('.') => d = parent,
            _ => return false,
        }
    }
}

/// A consumer mailbox provider (gmail.com, yahoo.fr, qq.com, …): says nothing about an employer.
pub(crate) fn is_free_mail(domain: &str) -> bool {
    listed(&FREE_MAIL, &domain.to_lowercase())
}

/// A throw-away mailbox service (mailinator.com, yopmail.com, …).
pub(crate) fn is_disposable(domain: &str) -> bool {
    listed(&DISPOSABLE, &domain.to_lowercase())
}

/// Whether `email` is a syntactically valid address (the `syntaxValid` rule).
pub(crate) fn syntax_valid(email: &str) -> bool {
    check(email)["syntaxValid"] == true
}

#[cfg(test)]
mod tests {
    use super::super::test_support::person;
    use super::*;
    use proptest::prelude::*;
    use puffle_domain::lead::parse_domain;

    fn valid(email: &str) -> bool {
        check(email)["syntaxValid"] == true
    }

    #[test]
    fn a_work_address_is_described() {
        assert_eq!(
            check("  Ann.Lee@Acme.COM "),
            json!({"email": "ann.lee@acme.com", "syntaxValid": true, "domain": "acme.com",
                   "freeProvider": false, "disposable": false, "roleAccount": false})
        );
    }

    #[test]
    fn input_email_wins_over_the_leads_and_wrong_types_fall_back() {
        let lead = person(json!({"contacts": [
            {"type": "phone", "value": "+1 555"},
            {"type": "work_email", "value": "ann@acme.com"},
            {"type": "email", "value": "ann@gmail.com"}]}));
        let email_of = |o: Outcome| match o {
            Outcome::Hit(v) => v["email"].clone(),
            other => panic!("expected a hit, got {other:?}"),
        };
        assert_eq!(email_of(run(&lead, &json!({}))), "ann@acme.com");
        assert_eq!(
            email_of(run(&lead, &json!({"email": "x@y.org"}))),
            "x@y.org"
        );
        assert_eq!(email_of(run(&lead, &json!({"email": 42}))), "ann@acme.com");
        assert_eq!(email_of(run(&lead, &json!({"email": ""}))), "ann@acme.com");
        // An untyped contact is an email when it has an @ (like the lead API's rule).
        let untyped = person(json!({"contacts": [{"value": "bo@acme.io"}]}));
        assert_eq!(email_of(run(&untyped, &json!(null))), "bo@acme.io");
    }

    #[test]
    fn no_email_is_missing_input() {
        let lead = person(json!({"contacts": [{"type": "phone", "value": "+1 555"},
                                               {"type": "email", "value": "   "}]}));
        assert_eq!(run(&lead, &json!({})), Outcome::MissingInput);
        assert_eq!(
            run(&lead, &json!({"email": {"a": 1}})),
            Outcome::MissingInput
        );
    }

    #[test]
    fn valid_syntax() {
        for e in [
            "a@b.co",
            "first.last@sub.example.org",
            "user+tag@example.com",
            "o'brien@example.ie",
            "x!#$%&'*+-/=?^_`{|}~@example.com",
            "\"john doe\"@example.com",
            "\"a@b\"@example.com",
            "\"quote\\\"inside\"@example.com",
            "josé@bücher.de",
            "user@xn--p1ai.xn--p1ai",
            "a@1.example.com",
            &format!("{}@example.com", "a".repeat(64)),
        ] {
            assert!(valid(e), "{e} should be valid");
        }
    }

    #[test]
    fn invalid_syntax() {
        let long_domain = format!("a@{}.com", vec!["b".repeat(63); 4].join("."));
        for e in [
            "",
            "plain",
            "@example.com",
            "user@",
            "user@localhost",
            ".user@example.com",
            "user.@example.com",
            "us..er@example.com",
            "us er@example.com",
            "user@exa mple.com",
            "user@-example.com",
            "user@example-.com",
            "user@example..com",
            "user@example.com.",
            "user@[192.168.0.1]",
            "user@192.168.0.1",
            "user@example.c",
            "a\"b@example.com",
            "\"unterminated@example.com",
            "\"bad\"quote\"@example.com",
            "\"ends with backslash\\\"@example.com",
            "user@exam_ple.com",
            "user@example.com\u{0}",
            &format!("{}@example.com", "a".repeat(65)),
            &long_domain,
        ] {
            assert!(!valid(e), "{e:?} should be invalid");
        }
        // 254 octets in all at most, even when each part is within its own limit.
        let local = "a".repeat(64);
        let labels = vec!["b".repeat(60); 4].join(".");
        assert!(!valid(&format!("{local}@{labels}.com")));
    }

    #[test]
    fn an_invalid_address_is_still_a_described_hit() {
        assert_eq!(
            check("not an email"),
            json!({"email": "not an email", "syntaxValid": false, "domain": null,
                   "freeProvider": false, "disposable": false, "roleAccount": false})
        );
        // The domain part is fine, the local part is not: domain and flags are still computed.
        let v = check("..info@GMAIL.com");
        assert_eq!(v["syntaxValid"], false);
        assert_eq!(v["domain"], "gmail.com");
        assert_eq!(v["freeProvider"], true);
        // Role from the local part even when the domain is unusable.
        let v = check("sales@nowhere");
        assert_eq!(
            (v["domain"].clone(), v["roleAccount"].clone()),
            (Value::Null, json!(true))
        );
    }

    #[test]
    fn quoted_local_parts_keep_their_case() {
        assert_eq!(check("\"Ann\"@ACME.com")["email"], "\"Ann\"@acme.com");
    }

    #[test]
    fn free_and_disposable_providers() {
        for d in [
            "gmail.com",
            "googlemail.com",
            "yahoo.co.uk",
            "outlook.com",
            "hotmail.fr",
            "live.com",
            "aol.com",
            "icloud.com",
            "me.com",
            "proton.me",
            "protonmail.com",
            "gmx.de",
            "web.de",
            "mail.ru",
            "yandex.ru",
            "qq.com",
            "163.com",
            "GMAIL.COM",
        ] {
            assert!(is_free_mail(d), "{d}");
            assert!(!is_disposable(d), "{d}");
        }
        for d in [
            "mailinator.com",
            "10minutemail.com",
            "guerrillamail.com",
            "yopmail.com",
            "temp-mail.org",
            "trashmail.com",
            "sharklasers.com",
            "eu.mailinator.com",
        ] {
            assert!(is_disposable(d), "{d}");
            assert!(!is_free_mail(d), "{d}");
        }
        for d in [
            "acme.com",
            "gmail.co",
            "notgmail.com",
            "com",
            "",
            "mailinator",
        ] {
            assert!(!is_free_mail(d) && !is_disposable(d), "{d}");
        }
        let v = check("x@mail.yahoo.co.uk");
        assert_eq!(v["freeProvider"], true);
        assert_eq!(check("x@yopmail.com")["disposable"], true);
    }

    #[test]
    fn shipped_lists_are_clean_and_large() {
        for (name, list) in [("free_mail", &*FREE_MAIL), ("disposable", &*DISPOSABLE)] {
            assert!(list.len() >= 300, "{name} has only {} domains", list.len());
            for d in list {
                assert_eq!(parse_domain(d).as_deref(), Some(*d), "{name}: {d}");
            }
        }
        let both: Vec<_> = FREE_MAIL.intersection(&DISPOSABLE).collect();
        assert!(both.is_empty(), "listed as free and disposable: {both:?}");
    }

    #[test]
    fn role_accounts() {
        for local in [
            "info",
            "INFO",
            "sales+leads",
            "no-reply",
            "no_reply",
            "noreply",
            "do-not-reply",
            "Post.Master",
            "support",
            "hr",
            "careers",
        ] {
            assert!(
                check(&format!("{local}@acme.com"))["roleAccount"] == true,
                "{local}"
            );
        }
        for local in [
            "ann",
            "information.ann",
            "salesman",
            "info2",
            "+info",
            "ann+info",
        ] {
            assert!(
                check(&format!("{local}@acme.com"))["roleAccount"] == false,
                "{local}"
            );
        }
    }

    #[test]
    fn huge_and_odd_inputs_are_described_without_panicking() {
        let huge = format!("{}@{}.com", "a".repeat(100_000), "b".repeat(100_000));
        assert_eq!(check(&huge)["syntaxValid"], false);
        for odd in [
            "@",
            "@@",
            "\"",
            "\"\"@a.co",
            "a@b@c.com",
            "🦀@🦀.com",
            "\u{200b}@x.com",
        ] {
            let v = check(odd);
            assert!(v["syntaxValid"].is_boolean(), "{odd}");
        }
        // RFC 5321 allows an empty quoted local part.
        assert!(valid("\"\"@a.co"));
        assert!(!valid("a@b@c.com"));
    }

    proptest! {
        #[test]
        fn never_panics_and_always_has_every_key(s in "\\PC{0,80}") {
            let v = check(&s);
            for key in ["email", "syntaxValid", "domain", "freeProvider", "disposable", "roleAccount"] {
                prop_assert!(v.get(key).is_some(), "{} missing", key);
            }
            if v["syntaxValid"] == true {
                prop_assert!(v["domain"].is_string());
                prop_assert!(s.trim().len() <= 254);
            }
        }

        #[test]
        fn checking_is_idempotent(s in "\\PC{0,40}|[a-zA-Z0-9._+-]{1,12}@[a-zA-Z0-9.-]{1,12}\\.[a-zA-Z]{2,4}") {
            let v = check(&s);
            if let Some(email) = v["email"].as_str() {
                let again = check(email);
                prop_assert_eq!(&again["email"], &v["email"]);
                prop_assert_eq!(&again["syntaxValid"], &v["syntaxValid"]);
                prop_assert_eq!(&again["domain"], &v["domain"]);
            }
        }

        #[test]
        fn ordinary_addresses_are_valid(
            local in "[a-z0-9]{1,20}([._+-][a-z0-9]{1,20}){0,2}",
            domain in "[a-z0-9]{1,20}(-[a-z0-9]{1,10})?\\.(com|org|co\\.uk|io|de)",
        ) {
            let v = check(&format!("{local}@{domain}"));
            prop_assert_eq!(&v["syntaxValid"], &json!(true));
            prop_assert_eq!(&v["domain"], &json!(domain));
        }
    }
}
