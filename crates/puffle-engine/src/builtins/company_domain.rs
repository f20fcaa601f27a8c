//! `company_domain` (any subject): the domain of the lead's company, from what the lead already
//! holds.
//!
//! Sources, first usable wins: `domain`, `company.domain`, the email contacts' domains (free-mail
//! and disposable providers skipped: they say nothing about an employer), then the socials'
//! URLs: website-like types (`website`, `homepage`, `url`, …) first, then any other social whose
//! URL is not on a known social network. The domain is kept as written (no reduction to the
//! registrable domain: that needs the public suffix list), minus scheme, `www.`, port and path.

use puffle_domain::lead::{parse_domain, Lead, Social};
use serde_json::{json, Value};

use super::email_check::{is_disposable, is_free_mail};
use super::{lead_emails, object_schema};
use crate::Outcome;

pub fn run(lead: &Lead, _input: &Value) -> Outcome {
    match find(lead) {
        Some(domain) => Outcome::Hit(json!({ "domain": domain })),
        None => Outcome::MissingInput,
    }
}

pub fn input_schema() -> Value {
    object_schema(json!({}), &[], false)
}

pub fn output_schema() -> Value {
    object_schema(json!({"domain": {"type": "string"}}), &["domain"], true)
}

/// The company domain, normalized by [`parse_domain`]; `None` when no source holds one.
fn find(lead: &Lead) -> Option<String> {
    let f = &lead.fields;
    let declared = [&f.domain, &f.company.domain]
        .into_iter()
        .flatten()
        .filter_map(|d| parse_domain(d));
    let socials = f.socials.iter();
    let websites = socials
        .clone()
        .filter(|s| is_website_kind(s))
        .chain(socials.filter(|s| !is_website_kind(s)))
        .filter_map(|s| parse_domain(&s.url))
        .filter(|d| !is_social_network(d));
    declared
        .chain(work_email_domains(lead))
        .chain(websites)
        .next()
}

/// The domains of the lead's emails that can belong to an employer, in contact order.
pub(crate) fn work_email_domains(lead: &Lead) -> impl Iterator<Item = String> + '_ {
    lead_emails(lead)
        .filter_map(|e| e.rsplit_once('@').and_then(|(_, d)| parse_domain(d)))
        .filter(|d| !is_free_mail(d) && !is_disposable(d))
}

fn is_website_kind(s: &Social) -> bool {
    let kind = s.kind.as_deref().map(|k| k.trim().to_lowercase());
    matches!(
        kind.as_deref(),
        Some("website" | "homepage" | "url" | "web" | "site" | "home" | "homepage_url")
    )
}

/// Hosts whose URLs are profiles or links, not a company's own site. A subdomain matches too
/// (`uk.linkedin.com`); a few entries are subdomains themselves so that the parent company's
/// own site (`google.com`, `apple.com`) still counts.
const SOCIAL_NETWORKS: &[&str] = &[
    "about.me",
    "angel.co",
    "apps.apple.com",
    "behance.net",
    "bit.ly",
    "bsky.app",
    "calendly.com",
    "crunchbase.com",
    "discord.com",
    "discord.gg",
    "dribbble.com",
    "facebook.com",
    "fb.com",
    "fb.me",
    "github.com",
    "gitlab.com",
    "glassdoor.com",
    "goo.gl",
    "instagram.com",
    "linkedin.com",
    "linktr.ee",
    "lnkd.in",
    "maps.google.com",
    "mastodon.social",
    "medium.com",
    "ok.ru",
    "pinterest.com",
    "play.google.com",
    "plus.google.com",
    "producthunt.com",
    "reddit.com",
    "snapchat.com",
    "stackoverflow.com",
    "t.co",
    "t.me",
    "telegram.me",
    "threads.net",
    "tiktok.com",
    "tumblr.com",
    "twitch.tv",
    "twitter.com",
    "vimeo.com",
    "vk.com",
    "wa.me",
    "wellfound.com",
    "whatsapp.com",
    "weibo.com",
    "x.com",
    "xing.com",
    "yelp.com",
    "youtu.be",
    "youtube.com",
];

fn is_social_network(domain: &str) -> bool {
    SOCIAL_NETWORKS.iter().any(|s| {
        domain
            .strip_suffix(s)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{lead, person};
    use super::*;
    use proptest::prelude::*;
    use puffle_domain::LeadType;

    fn domain_of(fields: Value) -> Outcome {
        run(&person(fields), &json!({}))
    }

    fn hit(domain: &str) -> Outcome {
        Outcome::Hit(json!({ "domain": domain }))
    }

    #[test]
    fn declared_domains_come_first_and_are_normalized() {
        assert_eq!(
            domain_of(json!({"domain": "https://WWW.Acme.com/about?x=1",
                             "company": {"domain": "other.com"},
                             "contacts": [{"type": "email", "value": "a@third.com"}]})),
            hit("acme.com")
        );
        assert_eq!(
            domain_of(json!({"company": {"domain": "Acme.co.uk:443"}})),
            hit("acme.co.uk")
        );
        // An unusable declared domain falls through to the next source.
        assert_eq!(
            domain_of(json!({"domain": "not a domain",
                             "contacts": [{"type": "email", "value": "a@acme.io"}]})),
            hit("acme.io")
        );
    }

    #[test]
    fn emails_skip_free_and_disposable_providers() {
        assert_eq!(
            domain_of(json!({"contacts": [
                {"type": "phone", "value": "+1 555 0100"},
                {"type": "email", "value": "ann@gmail.com"},
                {"type": "email", "value": "ann@mailinator.com"},
                {"type": "email", "value": "broken"},
                {"type": "work_email", "value": "Ann@Sub.Acme.com"}]})),
            hit("sub.acme.com")
        );
        assert_eq!(
            domain_of(json!({"contacts": [{"type": "email", "value": "ann@yahoo.co.uk"}]})),
            Outcome::MissingInput
        );
    }

    #[test]
    fn website_socials_before_other_non_social_urls() {
        assert_eq!(
            domain_of(json!({"socials": [
                {"type": "linkedin", "url": "https://www.linkedin.com/in/ann"},
                {"type": "blog", "url": "https://ann-writes.net/posts/1"},
                {"type": "Website", "url": "http://www.acme.com/"}]})),
            hit("acme.com")
        );
        // No website type: a URL that is not a social network still counts.
        assert_eq!(
            domain_of(json!({"socials": [
                {"type": "twitter", "url": "https://x.com/acme"},
                {"url": "https://uk.linkedin.com/company/acme"},
                {"type": "other", "url": "acme.dev"}]})),
            hit("acme.dev")
        );
        // A website type pointing at a social network is not the company's site.
        assert_eq!(
            domain_of(
                json!({"socials": [{"type": "website", "url": "https://facebook.com/acme"}]})
            ),
            Outcome::MissingInput
        );
        // Emails come before socials.
        assert_eq!(
            domain_of(json!({"socials": [{"type": "website", "url": "acme.com"}],
                             "contacts": [{"type": "email", "value": "ann@acme-corp.com"}]})),
            hit("acme-corp.com")
        );
    }

    #[test]
    fn social_network_matching_respects_label_boundaries() {
        assert!(is_social_network("linkedin.com"));
        assert!(is_social_network("de.linkedin.com"));
        assert!(is_social_network("x.com"));
        assert!(!is_social_network("box.com"));
        assert!(!is_social_network("notlinkedin.com"));
        assert!(!is_social_network("google.com"));
        assert!(is_social_network("maps.google.com"));
    }

    #[test]
    fn company_leads_work_too() {
        let company = lead(
            LeadType::Company,
            json!({"name": {"full": "Acme"}, "contacts": [{"value": "info@acme.org"}]}),
        );
        assert_eq!(run(&company, &json!({})), hit("acme.org"));
    }

    #[test]
    fn nothing_usable_is_missing_input() {
        for fields in [
            json!({}),
            json!({"domain": "", "company": {"domain": "   "}}),
            json!({"domain": "localhost", "socials": [{"type": "website", "url": "http://"}]}),
            json!({"contacts": [{"type": "email", "value": "ann.lee"}, {"type": "phone", "value": "a@b"}]}),
            json!({"socials": [{"type": "github", "url": "https://github.com/ann"}]}),
        ] {
            assert_eq!(domain_of(fields.clone()), Outcome::MissingInput, "{fields}");
        }
    }

    proptest! {
        #[test]
        fn output_is_always_a_parse_domain_value(
            domain in "\\PC{0,40}",
            email in "\\PC{0,40}",
            url in "(https?://)?(www\\.)?\\PC{0,30}",
        ) {
            let fields = json!({
                "domain": domain, "contacts": [{"type": "email", "value": email}],
                "socials": [{"type": "website", "url": url}]});
            match run(&person(fields), &json!({"unused": [1]})) {
                Outcome::Hit(v) => {
                    let d = v["domain"].as_str().unwrap_or_default().to_string();
                    prop_assert_eq!(parse_domain(&d), Some(d));
                }
                Outcome::MissingInput => {}
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
