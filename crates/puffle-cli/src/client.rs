//! Client commands: each maps flags onto one API call (spec §9).
//!
//! Every command builds one [`Call`] (method, path, query, body); [`http::execute`] sends it and
//! [`output`] prints the answer. Request bodies and queries are the flag structs themselves,
//! serialized with camelCase names; flags left out are not sent.

mod args;
mod enrichment;
mod http;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use args::{json_array, json_object, json_object_or_string, json_value, string_or_integer};
pub use http::Global;
use http::{has_fields, Call, Fail, Payload};

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Search leads (GET /api/leads), or create, update and delete them.
    Lead(Box<LeadCommand>),
    /// Show lists (GET /api/lists), or manage lists, their members, CSV import and export.
    List(Box<ListCommand>),
    /// Show the credit balance and ledger (GET /api/credits), the price table, or preview a cost.
    Credit(CreditCommand),
    /// Show the calling user, their workspace and its credit balance (GET /api/account).
    Account(AccountCommand),
    /// Show the enrichment catalog (GET /api/enrichments), or create, watch, read and cancel runs.
    Enrichment(Box<enrichment::EnrichmentCommand>),
}

// ---------------------------------------------------------------- leads

#[derive(Args)]
#[command(subcommand_negates_reqs = true)]
pub struct LeadCommand {
    #[command(subcommand)]
    action: Option<LeadAction>,
    #[command(flatten)]
    search: LeadSearch,
    #[command(flatten)]
    global: Global,
}

/// Query of `GET /api/leads`.
#[derive(Args, Serialize)]
struct LeadSearch {
    /// Only the lead with this id.
    #[arg(long)]
    id: Option<String>,
    /// Only leads of this type.
    #[arg(long = "type", value_name = "TYPE", value_parser = ["person", "company"])]
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Page size, 1–500 (default 50).
    #[arg(long)]
    limit: Option<u32>,
    /// Continue after this lead id (the previous page's nextCursor).
    #[arg(long)]
    cursor: Option<String>,
    /// Case-insensitive text search over name, title, company, domain, industry, location, emails.
    #[arg(long)]
    q: Option<String>,
    /// Filter: name contains.
    #[arg(long)]
    name: Option<String>,
    /// Filter: title contains.
    #[arg(long)]
    title: Option<String>,
    /// Filter: title contains (alias of --title).
    #[arg(long)]
    role: Option<String>,
    /// Filter: company contains.
    #[arg(long)]
    company: Option<String>,
    /// Filter: domain contains.
    #[arg(long)]
    domain: Option<String>,
    /// Filter: an email contact contains.
    #[arg(long)]
    email: Option<String>,
    /// Filter: industry contains.
    #[arg(long)]
    industry: Option<String>,
    /// Filter: location contains.
    #[arg(long)]
    location: Option<String>,
}

#[derive(Subcommand)]
enum LeadAction {
    /// Create a lead, or fill the empty fields of the existing lead it duplicates (POST /api/leads).
    Create(LeadCreate),
    /// Change only the given fields of a lead (PATCH /api/leads).
    Update(LeadUpdate),
    /// Delete a lead with its memberships and attributes (DELETE /api/leads).
    Delete(IdBody),
}

#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct LeadCreate {
    /// Lead type.
    #[arg(long = "type", value_name = "TYPE", value_parser = ["person", "company"])]
    #[serde(rename = "type")]
    kind: String,
    #[command(flatten)]
    #[serde(flatten)]
    fields: LeadFields,
    /// Also add the lead to these lists: JSON array of list ids.
    #[arg(long, value_name = "JSON", value_parser = json_array)]
    list_ids: Option<Value>,
}

#[derive(Args, Serialize)]
struct LeadUpdate {
    /// Id of the lead to change.
    #[arg(long)]
    id: String,
    #[command(flatten)]
    #[serde(flatten)]
    fields: LeadFields,
}

/// The writable fields of a lead (create and update).
#[derive(Args, Serialize)]
struct LeadFields {
    /// Name: a plain string (the full name) or a JSON object {full, first, last, short, aliases}.
    #[arg(long, value_name = "TEXT|JSON", value_parser = json_object_or_string)]
    name: Option<Value>,
    /// Job title.
    #[arg(long)]
    title: Option<String>,
    /// Company: a plain string (its name) or a JSON object {name, id, domain}.
    #[arg(long, value_name = "TEXT|JSON", value_parser = json_object_or_string)]
    company: Option<Value>,
    /// Location: a plain string or a JSON object {city, state, country, raw}.
    #[arg(long, value_name = "TEXT|JSON", value_parser = json_object_or_string)]
    location: Option<Value>,
    /// JSON array of {type, url}, e.g. '[{"type":"linkedin","url":"…"}]'.
    #[arg(long, value_name = "JSON", value_parser = json_array)]
    socials: Option<Value>,
    /// JSON array of {type, value}, e.g. '[{"type":"email","value":"a@b.com"}]'.
    #[arg(long, value_name = "JSON", value_parser = json_array)]
    contacts: Option<Value>,
    /// Website domain (companies).
    #[arg(long)]
    domain: Option<String>,
    /// Industry.
    #[arg(long)]
    industry: Option<String>,
    /// Company size: an integer or a text such as 51-200.
    #[arg(long, value_parser = string_or_integer)]
    size: Option<Value>,
    /// JSON object of attributes (on update merged by key; a key set to null is removed).
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    attributes: Option<Value>,
    /// Any JSON kept as the lead's raw source data.
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    raw: Option<Value>,
    /// JSON array of {provider, externalId}.
    #[arg(long, value_name = "JSON", value_parser = json_array)]
    sources: Option<Value>,
}

#[derive(Args, Serialize)]
struct IdBody {
    /// Id of the object.
    #[arg(long)]
    id: String,
}

// ---------------------------------------------------------------- lists

#[derive(Args)]
#[command(subcommand_negates_reqs = true)]
pub struct ListCommand {
    #[command(subcommand)]
    action: Option<ListAction>,
    /// Only the list with this id.
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    global: Global,
}

#[derive(Subcommand)]
enum ListAction {
    /// Create a list (POST /api/lists).
    Create(ListCreate),
    /// Rename, describe or retype a list (PATCH /api/lists).
    Update(ListUpdate),
    /// Delete a list; its leads survive (DELETE /api/lists).
    Delete(IdBody),
    /// Show a list's members (GET /api/lists/{id}/leads), or add and remove members.
    Lead(ListLeadCommand),
    /// Import leads given as JSON, deduplicated, optionally into a list (POST /api/lists/import).
    Import(ListImport),
    /// Import a CSV file into a list, streamed (POST /api/lists/{id}/import.csv).
    ImportCsv(ListImportCsv),
    /// Write a list's members as CSV to stdout, streamed (GET /api/lists/{id}/export.csv).
    ExportCsv(PathId),
}

#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListCreate {
    /// Name (default "Untitled List").
    #[arg(long)]
    name: Option<String>,
    /// Description.
    #[arg(long)]
    description: Option<String>,
    /// Which leads the list may hold (default person).
    #[arg(long, value_parser = ["person", "company", "mixed"])]
    lead_type: Option<String>,
    /// Initial members: JSON array of lead ids.
    #[arg(long, value_name = "JSON", value_parser = json_array)]
    lead_ids: Option<Value>,
}

#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListUpdate {
    /// Id of the list to change.
    #[arg(long)]
    id: String,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New description.
    #[arg(long)]
    description: Option<String>,
    /// New lead type (409 if current members do not fit it).
    #[arg(long, value_parser = ["person", "company", "mixed"])]
    lead_type: Option<String>,
}

#[derive(Args, Serialize)]
#[command(subcommand_negates_reqs = true)]
struct ListLeadCommand {
    #[command(subcommand)]
    #[serde(skip)]
    action: Option<ListLeadAction>,
    /// Id of the list.
    #[arg(long, required = true)]
    #[serde(skip)]
    id: Option<String>,
    /// Page size, 1–500 (default 50).
    #[arg(long)]
    limit: Option<u32>,
    /// Continue after this lead id (the previous page's nextCursor).
    #[arg(long)]
    cursor: Option<String>,
    /// Only members of this type.
    #[arg(long = "type", value_name = "TYPE", value_parser = ["person", "company"])]
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Subcommand)]
enum ListLeadAction {
    /// Add leads to a list; members already in it are left alone (POST /api/lists/{id}/leads).
    Add(ListLeadIds),
    /// Remove leads from a list; the leads survive (DELETE /api/lists/{id}/leads).
    Remove(ListLeadIds),
}

#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListLeadIds {
    /// Id of the list.
    #[arg(long)]
    #[serde(skip)]
    id: String,
    /// JSON array of lead ids (1–1000).
    #[arg(long, value_name = "JSON", value_parser = json_array)]
    lead_ids: Value,
}

#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListImport {
    /// JSON array of leads (1–500), each shaped like the body of `puffle lead create`.
    #[arg(long, value_name = "JSON", value_parser = json_array)]
    leads: Value,
    /// Add the imported leads to this list.
    #[arg(long)]
    list_id: Option<String>,
    /// Only count what would be imported; change nothing.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    preview: bool,
}

#[derive(Args)]
struct ListImportCsv {
    /// Id of the list to import into.
    #[arg(long)]
    id: String,
    /// CSV file with a header row (columns per the API docs; unknown ones become attributes), or - for stdin.
    file: PathBuf,
}

#[derive(Args)]
struct PathId {
    /// Id of the list.
    #[arg(long)]
    id: String,
}

// ---------------------------------------------------------------- credits, account

#[derive(Args)]
pub struct CreditCommand {
    #[command(subcommand)]
    action: Option<CreditAction>,
    #[command(flatten)]
    global: Global,
}

#[derive(Subcommand)]
enum CreditAction {
    /// Show the price of every credit action and the plans (GET /api/credits/config).
    Config,
    /// Price an action for a number of units against the balance (POST /api/credits/preview).
    Preview(CreditPreview),
}

#[derive(Args, Serialize)]
struct CreditPreview {
    /// Credit action, e.g. custom_http (see `puffle credit config`).
    #[arg(long)]
    action: String,
    /// Number of units.
    #[arg(long)]
    count: u64,
}

#[derive(Args)]
pub struct AccountCommand {
    #[command(subcommand)]
    action: Option<AccountAction>,
    #[command(flatten)]
    global: Global,
}

#[derive(Subcommand)]
enum AccountAction {
    /// [ours] Create or replace your run-webhook signing secret and print it, once
    /// (POST /api/user/webhook-secret).
    WebhookSecret,
}

// ---------------------------------------------------------------- dispatch

pub async fn run(cmd: ClientCommand) -> ExitCode {
    if let ClientCommand::Enrichment(cmd) = cmd {
        return enrichment::run(*cmd).await;
    }
    let (global, call) = match plan(cmd) {
        Ok(planned) => planned,
        Err(fail) => return fail.report(),
    };
    match http::execute(&global, call).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => fail.report(),
    }
}

/// Turn a command into the one API call it stands for.
fn plan(cmd: ClientCommand) -> Result<(Global, Call), Fail> {
    use Method as M;
    let call = |method: Method, path: &[&str]| Call::new(method, path);
    Ok(match cmd {
        ClientCommand::Lead(cmd) => {
            let LeadCommand {
                action,
                search,
                global,
            } = *cmd;
            alone("lead", action.is_some(), has_fields(&search))?;
            let call = match action {
                None => call(M::GET, &["leads"]).query(&search),
                Some(LeadAction::Create(body)) => call(M::POST, &["leads"]).json(&body),
                Some(LeadAction::Update(body)) => call(M::PATCH, &["leads"]).json(&body),
                Some(LeadAction::Delete(body)) => call(M::DELETE, &["leads"]).json(&body),
            };
            (global, call)
        }
        ClientCommand::List(cmd) => {
            let ListCommand { action, id, global } = *cmd;
            alone("list", action.is_some(), id.is_some())?;
            let call = match action {
                None => call(M::GET, &["lists"]).query(&json!({ "id": id })),
                Some(ListAction::Create(body)) => call(M::POST, &["lists"]).json(&body),
                Some(ListAction::Update(body)) => call(M::PATCH, &["lists"]).json(&body),
                Some(ListAction::Delete(body)) => call(M::DELETE, &["lists"]).json(&body),
                Some(ListAction::Lead(cmd)) => {
                    let own_flags = cmd.id.is_some() || has_fields(&cmd);
                    alone("list lead", cmd.action.is_some(), own_flags)?;
                    match &cmd.action {
                        None => {
                            let id = cmd.id.as_deref().unwrap_or_default();
                            call(M::GET, &["lists", id, "leads"]).query(&cmd)
                        }
                        Some(ListLeadAction::Add(body)) => {
                            call(M::POST, &["lists", &body.id, "leads"]).json(body)
                        }
                        Some(ListLeadAction::Remove(body)) => {
                            call(M::DELETE, &["lists", &body.id, "leads"]).json(body)
                        }
                    }
                }
                Some(ListAction::Import(body)) => call(M::POST, &["lists", "import"]).json(&body),
                Some(ListAction::ImportCsv(ListImportCsv { id, file })) => {
                    call(M::POST, &["lists", &id, "import.csv"]).payload(Payload::Csv(file))
                }
                Some(ListAction::ExportCsv(PathId { id })) => {
                    call(M::GET, &["lists", &id, "export.csv"])
                }
            };
            (global, call)
        }
        ClientCommand::Credit(CreditCommand { action, global }) => {
            let call = match action {
                None => call(M::GET, &["credits"]),
                Some(CreditAction::Config) => call(M::GET, &["credits", "config"]),
                Some(CreditAction::Preview(body)) => {
                    call(M::POST, &["credits", "preview"]).json(&body)
                }
            };
            (global, call)
        }
        ClientCommand::Account(AccountCommand { action, global }) => {
            let call = match action {
                None => call(M::GET, &["account"]),
                Some(AccountAction::WebhookSecret) => call(M::POST, &["user", "webhook-secret"]),
            };
            (global, call)
        }
        ClientCommand::Enrichment(_) => unreachable!("`run` hands these to enrichment::run"),
    })
}

/// A command's own flags (`puffle lead --q …`) do not apply to its subcommands: refuse them
/// together rather than ignore some. (Clap's own check would also refuse the global flags there.)
fn alone(command: &str, has_subcommand: bool, has_own_flags: bool) -> Result<(), Fail> {
    if has_subcommand && has_own_flags {
        return Err(Fail::usage(format!(
            "the flags of `puffle {command}` cannot be combined with its subcommands; \
             give the subcommand's flags after it (see `puffle {command} <subcommand> --help`)"
        )));
    }
    Ok(())
}
