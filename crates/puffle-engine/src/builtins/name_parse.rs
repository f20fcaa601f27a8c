//! `name_parse` (person): a person's name split into prefix, first, middle, last and suffix.
//!
//! Reads `name.full`, else `name.first`/`name.last`. Rules, in order:
//! - nicknames in parentheses or double quotes are dropped: `William "Bill" Gates`;
//! - `Last, First Middle` order is recognised by a comma whose right side is not only suffixes
//!   (`Smith, John` vs `John Smith, Jr.`);
//! - leading honorifics are prefixes (`Prof. Dr.`), trailing generational and academic titles
//!   suffixes (`Jr.`, `III`, `PhD`); a prefix followed by a single name makes it a last name
//!   (`Mr. Smith`);
//! - a single remaining word is a first name (`王小明`, `Cher`): scripts without spaces cannot be
//!   split without a dictionary;
//! - the last word is the last name, together with the particles right before it (`van der`,
//!   `de la`, `bin`), except the first word (`Van Morrison` is first `Van`);
//! - everything between first and last is the middle name, several joined by a space.
//!
//! Words keep the case and punctuation they were written with (`Dr.`, `O'Neil`, `García-López`).
//! Several prefixes are joined by a space, several suffixes by `, `.

use puffle_domain::lead::{Lead, Name};
use serde_json::{json, Value};

use super::{nullable_string, object_schema};
use crate::Outcome;

pub fn run(lead: &Lead, _input: &Value) -> Outcome {
    match parse_name(&lead.fields.name) {
        Some(p) => Outcome::Hit(json!({
            "first": p.first, "middle": p.middle, "last": p.last,
            "prefix": p.prefix, "suffix": p.suffix,
        })),
        None => Outcome::MissingInput,
    }
}

pub fn input_schema() -> Value {
    object_schema(json!({}), &[], false)
}

pub fn output_schema() -> Value {
    let s = nullable_string();
    object_schema(
        json!({"first": s, "middle": s, "last": s, "prefix": s, "suffix": s}),
        &["first", "middle", "last", "prefix", "suffix"],
        true,
    )
}

/// A parsed name. At least one of `first` and `last` is set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ParsedName {
    pub first: Option<String>,
    pub middle: Option<String>,
    pub last: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

/// The lead's name parsed: `name.full` when it holds a name, else `name.first`/`name.last`.
pub(crate) fn parse_name(name: &Name) -> Option<ParsedName> {
    name.full
        .as_deref()
        .and_then(parse_full)
        .or_else(|| parse_parts(name.first.as_deref(), name.last.as_deref()))
}

/// A name written as one string; `None` when it holds no word.
fn parse_full(full: &str) -> Option<ParsedName> {
    let cleaned = drop_nicknames(full);
    let mut parts = cleaned.split(',').map(words).filter(|w| !w.is_empty());
    let main = parts.next()?;
    let (suffix_parts, other_parts): (Vec<_>, Vec<_>) =
        parts.partition(|p| p.iter().all(|w| is_suffix(w)));
    let mut suffixes: Vec<&str> = suffix_parts.into_iter().flatten().collect();
    if other_parts.is_empty() {
        return natural_order(main, suffixes);
    }
    // "Last, First Middle": the right side is the given names, the left side the family name.
    let mut given: Vec<&str> = other_parts.into_iter().flatten().collect();
    let prefixes = take_prefixes(&mut given, 0);
    suffixes.splice(0..0, take_suffixes(&mut given, 0));
    let mut family = main;
    suffixes.splice(0..0, take_suffixes(&mut family, 1));
    Some(given_and_family(&given, &family, &prefixes, &suffixes))
}

/// `[prefixes] first [middles] [particles] last [suffixes]`.
fn natural_order<'a>(mut words: Vec<&'a str>, mut suffixes: Vec<&'a str>) -> Option<ParsedName> {
    let prefixes = take_prefixes(&mut words, 1);
    suffixes.splice(0..0, take_suffixes(&mut words, 1));
    let suffix = join(&suffixes, ", ");
    let prefix = join(&prefixes, " ");
    if let [only] = words[..] {
        let only = Some(only.to_string());
        let (first, last) = if prefix.is_some() {
            (None, only)
        } else {
            (only, None)
        };
        return Some(ParsedName {
            first,
            last,
            prefix,
            suffix,
            ..ParsedName::default()
        });
    }
    let (&first, rest) = words.split_first()?;
    // The last name starts at the last word, pulled left over particles, never onto the first word.
    let mut start = rest.len().checked_sub(1)?;
    while start > 0 && is_particle(rest[start - 1]) {
        start -= 1;
    }
    let (middle, last) = rest.split_at(start);
    Some(ParsedName {
        first: Some(first.to_string()),
        middle: join(middle, " "),
        last: join(last, " "),
        prefix,
        suffix,
    })
}

/// Separate first and last fields: the first field may carry prefixes and middle names, the last
/// field suffixes; particles simply stay in the last name.
pub(crate) fn parse_parts(first: Option<&str>, last: Option<&str>) -> Option<ParsedName> {
    let given_text = first
        .map(drop_nicknames)
        .unwrap_or_default()
        .replace(',', " ");
    let family_text = last.unwrap_or_default().replace(',', " ");
    let (mut given, mut family) = (words(&given_text), words(&family_text));
    if given.is_empty() && family.is_empty() {
        return None;
    }
    let prefixes = take_prefixes(&mut given, usize::from(family.is_empty()));
    let suffixes = take_suffixes(&mut family, usize::from(given.is_empty()));
    Some(given_and_family(&given, &family, &prefixes, &suffixes))
}

/// A name whose given names (first, then middles) and family name are already told apart.
fn given_and_family(
    given: &[&str],
    family: &[&str],
    prefixes: &[&str],
    suffixes: &[&str],
) -> ParsedName {
    ParsedName {
        first: given.first().map(|w| w.to_string()),
        middle: join(given.get(1..).unwrap_or_default(), " "),
        last: join(family, " "),
        prefix: join(prefixes, " "),
        suffix: join(suffixes, ", "),
    }
}

/// The words of `s`, without the punctuation around them (`Smith,` → `Smith`) and without
/// "words" that are only punctuation (`-`, `&`).
fn words(s: &str) -> Vec<&str> {
    s.split_whitespace()
        .map(|w| w.trim_matches(|c: char| matches!(c, ',' | ';' | ':')))
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .collect()
}

/// `s` without text in parentheses or double quotes (nicknames); an unclosed one runs to the end.
fn drop_nicknames(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut parens, mut quoted) = (0usize, false);
    for c in s.chars() {
        match c {
            '(' => parens += 1,
            ')' => parens = parens.saturating_sub(1),
            '"' | '“' | '”' => quoted = !quoted,
            _ if parens == 0 && !quoted => out.push(c),
            _ => {}
        }
        if matches!(c, '(' | ')' | '"' | '“' | '”') {
            // Keep words on either side of a nickname apart: `Bill"Gates"` is two words.
            out.push(' ');
        }
    }
    out
}

/// Remove and return the honorifics at the front of `words`, leaving at least `keep` words.
fn take_prefixes<'a>(words: &mut Vec<&'a str>, keep: usize) -> Vec<&'a str> {
    let n = words
        .iter()
        .take(words.len().saturating_sub(keep))
        .take_while(|w| is_prefix(w))
        .count();
    words.drain(..n).collect()
}

/// Remove and return the titles at the end of `words`, leaving at least `keep` words.
fn take_suffixes<'a>(words: &mut Vec<&'a str>, keep: usize) -> Vec<&'a str> {
    let n = words
        .iter()
        .rev()
        .take(words.len().saturating_sub(keep))
        .take_while(|w| is_suffix(w))
        .count();
    words.split_off(words.len() - n)
}

fn join(words: &[&str], sep: &str) -> Option<String> {
    (!words.is_empty()).then(|| words.join(sep))
}

/// Lowercased, without dots: `Ph.D.` → `phd`, `Dr.` → `dr`.
fn key(word: &str) -> String {
    word.chars()
        .filter(|c| *c != '.')
        .flat_map(char::to_lowercase)
        .collect()
}

const PREFIXES: &[&str] = &[
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "doctor",
    "prof",
    "professor",
    "sir",
    "dame",
    "lord",
    "lady",
    "rev",
    "revd",
    "reverend",
    "fr",
    "father",
    "pastor",
    "hon",
    "capt",
    "captain",
    "col",
    "gen",
    "lt",
    "maj",
    "sgt",
    "cmdr",
    "adm",
    "rabbi",
    "imam",
    "sheikh",
    "shaikh",
    "herr",
    "frau",
    "mme",
    "mlle",
    "madame",
    "monsieur",
    "sra",
    "srta",
];

/// Generational and academic or professional suffixes. Short words that are also surnames
/// (`Ma`, `Do`, `Ba`) are left out on purpose.
const SUFFIXES: &[&str] = &[
    "jr", "jnr", "sr", "snr", "ii", "iii", "iv", "2nd", "3rd", "phd", "md", "dds", "dmd", "dvm",
    "esq", "jd", "llm", "mba", "msc", "bsc", "cpa", "cfa", "rn", "obe", "mbe", "cbe", "kbe", "dbe",
    "frs", "qc", "kc", "mp", "ret",
];

/// Lowercase words that join the last name: `van der Berg`, `de la Cruz`, `bin Laden`.
const PARTICLES: &[&str] = &[
    "van", "von", "de", "da", "das", "dos", "des", "del", "della", "der", "den", "di", "du", "la",
    "le", "ten", "ter", "bin", "binti", "bint", "ibn", "al", "el", "st", "saint",
];

fn is_prefix(word: &str) -> bool {
    PREFIXES.contains(&key(word).as_str())
}

fn is_suffix(word: &str) -> bool {
    SUFFIXES.contains(&key(word).as_str())
}

fn is_particle(word: &str) -> bool {
    PARTICLES.contains(&key(word).as_str())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::person;
    use super::*;
    use proptest::prelude::*;

    /// `name_parse` over `name.full` = `full`, as the five fields (`-` for null).
    fn parse(full: &str) -> [String; 5] {
        let out = run(&person(json!({"name": {"full": full}})), &json!({}));
        let Outcome::Hit(v) = out else {
            panic!("{full:?}: expected a hit, got {out:?}")
        };
        ["prefix", "first", "middle", "last", "suffix"]
            .map(|k| v[k].as_str().unwrap_or("-").to_string())
    }

    fn expect(full: &str, want: [&str; 5]) {
        assert_eq!(parse(full), want.map(String::from), "{full:?}");
    }

    #[test]
    fn plain_names() {
        expect("Ann Lee", ["-", "Ann", "-", "Lee", "-"]);
        expect(
            "  Ada   King\tLovelace ",
            ["-", "Ada", "King", "Lovelace", "-"],
        );
        expect(
            "John Paul George Ringo Starr",
            ["-", "John", "Paul George Ringo", "Starr", "-"],
        );
        expect("J. R. R. Tolkien", ["-", "J.", "R. R.", "Tolkien", "-"]);
        expect("Cher", ["-", "Cher", "-", "-", "-"]);
    }

    #[test]
    fn prefixes_and_suffixes() {
        expect("Dr. Ann Lee", ["Dr.", "Ann", "-", "Lee", "-"]);
        expect(
            "Prof. Dr. Hans Müller",
            ["Prof. Dr.", "Hans", "-", "Müller", "-"],
        );
        expect("mrs jane doe", ["mrs", "jane", "-", "doe", "-"]);
        expect(
            "Martin Luther King Jr.",
            ["-", "Martin", "Luther", "King", "Jr."],
        );
        expect("John Smith III", ["-", "John", "-", "Smith", "III"]);
        expect("Jane Doe PhD", ["-", "Jane", "-", "Doe", "PhD"]);
        expect("John Smith, Jr.", ["-", "John", "-", "Smith", "Jr."]);
        expect(
            "Sir John Smith Jr., Esq.",
            ["Sir", "John", "-", "Smith", "Jr., Esq."],
        );
        expect(
            "Jane Doe, M.D., Ph.D.",
            ["-", "Jane", "-", "Doe", "M.D., Ph.D."],
        );
        // A title and one name: the name is a last name.
        expect("Mr. Smith", ["Mr.", "-", "-", "Smith", "-"]);
        // Surnames that look like nothing special stay names.
        expect("Jack Ma", ["-", "Jack", "-", "Ma", "-"]);
        expect("Anh Do", ["-", "Anh", "-", "Do", "-"]);
    }

    #[test]
    fn a_name_made_only_of_titles_keeps_a_word() {
        expect("Dr.", ["-", "Dr.", "-", "-", "-"]);
        expect("Dr. Jr.", ["Dr.", "-", "-", "Jr.", "-"]);
    }

    #[test]
    fn last_first_order() {
        expect("Lovelace, Ada", ["-", "Ada", "-", "Lovelace", "-"]);
        expect("Lovelace, Ada King", ["-", "Ada", "King", "Lovelace", "-"]);
        expect("van der Berg, Jan", ["-", "Jan", "-", "van der Berg", "-"]);
        expect("Smith, Dr. John Jr.", ["Dr.", "John", "-", "Smith", "Jr."]);
        expect("Smith Jr., John", ["-", "John", "-", "Smith", "Jr."]);
        expect("Smith, John, PhD", ["-", "John", "-", "Smith", "PhD"]);
        expect("Smith,", ["-", "Smith", "-", "-", "-"]);
        expect(", Ann Lee", ["-", "Ann", "-", "Lee", "-"]);
    }

    #[test]
    fn particles_belong_to_the_last_name() {
        expect(
            "Ludwig van Beethoven",
            ["-", "Ludwig", "-", "van Beethoven", "-"],
        );
        expect(
            "Vincent Willem van Gogh",
            ["-", "Vincent", "Willem", "van Gogh", "-"],
        );
        expect("Jan van der Berg", ["-", "Jan", "-", "van der Berg", "-"]);
        expect("Juan de la Cruz", ["-", "Juan", "-", "de la Cruz", "-"]);
        expect("Leonardo da Vinci", ["-", "Leonardo", "-", "da Vinci", "-"]);
        expect("Osama bin Laden", ["-", "Osama", "-", "bin Laden", "-"]);
        expect("Charles De Gaulle", ["-", "Charles", "-", "De Gaulle", "-"]);
        expect(
            "Otto von Bismarck Jr.",
            ["-", "Otto", "-", "von Bismarck", "Jr."],
        );
        // The first word is never a particle.
        expect("Van Morrison", ["-", "Van", "-", "Morrison", "-"]);
        expect("Di Smith", ["-", "Di", "-", "Smith", "-"]);
    }

    #[test]
    fn hyphens_apostrophes_and_unicode() {
        expect(
            "José María García-López",
            ["-", "José", "María", "García-López", "-"],
        );
        expect("Mary-Jane O'Neil", ["-", "Mary-Jane", "-", "O'Neil", "-"]);
        expect("Ægir Þórsson", ["-", "Ægir", "-", "Þórsson", "-"]);
        expect("Ægir", ["-", "Ægir", "-", "-", "-"]);
        expect("王小明", ["-", "王小明", "-", "-", "-"]);
        expect("Ангела Меркель", ["-", "Ангела", "-", "Меркель", "-"]);
        expect("Zoë\u{3000}Saldaña", ["-", "Zoë", "-", "Saldaña", "-"]);
    }

    #[test]
    fn nicknames_and_stray_punctuation_are_dropped() {
        expect(
            "William \"Bill\" Gates",
            ["-", "William", "-", "Gates", "-"],
        );
        expect("Robert (Bob) Smith", ["-", "Robert", "-", "Smith", "-"]);
        expect("Ann “Annie” Lee", ["-", "Ann", "-", "Lee", "-"]);
        expect("Ann - Lee &", ["-", "Ann", "-", "Lee", "-"]);
        expect("Ann (unclosed Lee", ["-", "Ann", "-", "-", "-"]);
    }

    #[test]
    fn first_and_last_fields_when_there_is_no_full_name() {
        let parsed = |first: Option<&str>, last: Option<&str>| {
            run(
                &person(json!({"name": {"first": first, "last": last}})),
                &json!({}),
            )
        };
        assert_eq!(
            parsed(Some("Mary Ann"), Some("van der Berg")),
            Outcome::Hit(
                json!({"first": "Mary", "middle": "Ann", "last": "van der Berg",
                                "prefix": null, "suffix": null})
            )
        );
        assert_eq!(
            parsed(Some("Dr. Ann"), Some("Lee Jr.")),
            Outcome::Hit(json!({"first": "Ann", "middle": null, "last": "Lee",
                                "prefix": "Dr.", "suffix": "Jr."}))
        );
        assert_eq!(
            parsed(None, Some("Lee")),
            Outcome::Hit(json!({"first": null, "middle": null, "last": "Lee",
                                "prefix": null, "suffix": null}))
        );
        // A blank full name falls back to the parts.
        let lead = person(json!({"name": {"full": "  ", "first": "Ann"}}));
        assert_eq!(
            run(&lead, &json!({})),
            Outcome::Hit(json!({"first": "Ann", "middle": null, "last": null,
                                "prefix": null, "suffix": null}))
        );
    }

    #[test]
    fn no_name_is_missing_input() {
        for name in [
            json!({}),
            json!({"full": ""}),
            json!({"full": " , ;; - "}),
            json!({"full": "(nickname only)", "first": "  "}),
            json!({"short": "Ann", "aliases": ["Ann"]}),
        ] {
            let lead = person(json!({ "name": name }));
            assert_eq!(run(&lead, &json!({})), Outcome::MissingInput, "{name}");
        }
    }

    #[test]
    fn huge_names_are_parsed() {
        let full = format!("Ann {} Lee", "x".repeat(200_000));
        let [_, first, middle, last, _] = parse(&full);
        assert_eq!(
            (first.as_str(), middle.len(), last.as_str()),
            ("Ann", 200_000, "Lee")
        );
        let many = "de ".repeat(10_000) + "Lee";
        assert_eq!(parse(&many)[3].len(), many.len() - 3);
    }

    proptest! {
        #[test]
        fn never_panics_and_only_returns_words_of_the_input(s in "\\PC{0,60}") {
            if let Some(p) = parse_full(&s) {
                prop_assert!(p.first.is_some() || p.last.is_some());
                for part in [&p.first, &p.middle, &p.last, &p.prefix, &p.suffix].into_iter().flatten() {
                    for w in part.split([' ', ',']).filter(|w| !w.is_empty()) {
                        prop_assert!(s.contains(w), "{:?} not in {:?}", w, s);
                    }
                }
            }
        }

        #[test]
        fn never_panics_on_parts(first in "\\PC{0,30}", last in "\\PC{0,30}") {
            let _ = parse_parts(Some(&first), Some(&last));
        }
    }
}
