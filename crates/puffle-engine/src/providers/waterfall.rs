//! Executing a configured enrichment: its steps in order, the first hit wins (a waterfall when
//! there are several). See `docs/providers.md` for the semantics users rely on:
//!
//! - a hit stops the waterfall; later steps are not called. The item's `metadata.provider` is
//!   the step's provider, `metadata.result` its answer.
//! - a miss, a step whose input is missing, a failed step and a retryable step all pass on to
//!   the next step.
//! - nothing hit: if some step was retryable (429, 5xx, timeout) the item is retried (the whole
//!   waterfall; answers of providers with `cache_ttl_seconds` come from the cache on the next
//!   attempt, so they are not paid twice); else if some step answered a miss the item completes
//!   with no result; else if every step lacked input the item is skipped (`missing_input`);
//!   else (every step failed) the item fails.
//! - every step that ran is reported in `metadata.inputSnapshot.steps` (and, for a failed item,
//!   in `error.details.steps`).

use std::sync::Arc;
use std::time::Duration;

use puffle_domain::lead::Lead;
use serde_json::{json, Value};

use super::cache::ResultCache;
use super::configured::{
    build_request, send, EnrichmentConfig, ProvidersConfig, StepKind, StepOutcome, StepReport,
};
use super::Execution;
use crate::template::Context;
use crate::throttle::Throttles;
use crate::Outcome;
use puffle_store::Submission;

/// Runs configured enrichments; one per executor.
pub struct Configured {
    client: reqwest::Client,
    config: Arc<ProvidersConfig>,
    throttles: Arc<Throttles>,
    cache: Option<ResultCache>,
}

impl Configured {
    pub fn new(
        config: Arc<ProvidersConfig>,
        throttles: Arc<Throttles>,
        cache: Option<ResultCache>,
    ) -> Configured {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("puffle/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Configured {
            client,
            config,
            throttles,
            cache,
        }
    }

    pub fn config(&self) -> &ProvidersConfig {
        &self.config
    }

    /// Run `enrichment`'s steps for one lead; `submission`: the job an async step submitted
    /// for this item already.
    pub async fn execute(
        &self,
        enrichment: &EnrichmentConfig,
        lead: &Lead,
        input: &Value,
        submission: Option<&Submission>,
    ) -> Execution {
        let ctx = Context::new(lead, input);
        // Configuration admits an async step only as the only step.
        if let [step] = enrichment.steps.as_slice() {
            if let (Some(spec), Some(provider)) = (
                &step.asynchronous,
                self.config.providers.get(&step.provider),
            ) {
                let call = super::async_step::Call {
                    client: &self.client,
                    throttles: &self.throttles,
                    provider,
                    step,
                    spec,
                };
                return call.run(&ctx, submission).await;
            }
        }
        let mut reports: Vec<StepReport> = Vec::new();
        for step in &enrichment.steps {
            let report = self.run_step(step, &ctx).await;
            let hit = matches!(report.outcome, StepOutcome::Hit(_));
            reports.push(report);
            if hit {
                break;
            }
        }
        conclude(reports)
    }

    async fn run_step(&self, step: &super::configured::Step, ctx: &Context) -> StepReport {
        let report = |outcome, request, answer, cached| StepReport {
            provider: step.provider.clone(),
            outcome,
            request,
            answer,
            cached,
        };
        let Some(provider) = self.config.providers.get(&step.provider) else {
            let message = format!("no provider named {} is configured", step.provider);
            return report(StepOutcome::Fail(message), None, None, false);
        };
        if step.kind != StepKind::Http {
            let message = "an async step runs alone, not in a waterfall".to_string();
            return report(StepOutcome::Fail(message), None, None, false);
        }
        let request = match build_request(provider, step, ctx) {
            Ok(r) => r,
            Err(outcome) => return report(outcome, None, None, false),
        };
        let shown = Some(request.shown.clone());
        let secrets = provider.secrets();
        let key = self
            .cache
            .as_ref()
            .and(provider.cache_ttl)
            .map(|_| super::cache::key(provider, step, &request));
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            if let Some((outcome, answer)) = cache.get(key).await {
                return report(outcome, shown, answer, true);
            }
        }
        let (outcome, answer) = send(&self.client, &self.throttles, provider, step, request).await;
        let answer = answer.map(|a| secrets.scrub(a));
        let outcome = secrets.scrub_outcome(outcome);
        if let (Some(cache), Some(key), Some(ttl)) = (&self.cache, &key, provider.cache_ttl) {
            cache
                .put(key, &provider.name, &outcome, answer.as_ref(), ttl)
                .await;
        }
        report(outcome, shown, answer, false)
    }
}

/// The item's outcome from the reports of the steps that ran (see the module documentation).
pub(crate) fn conclude(reports: Vec<StepReport>) -> Execution {
    let steps: Vec<Value> = reports.iter().map(StepReport::to_json).collect();
    let snapshot = |cached: bool| json!({"steps": steps, "cached": cached});
    let hit = reports.iter().find_map(|r| match &r.outcome {
        StepOutcome::Hit(value) => Some((r, value)),
        _ => None,
    });
    if let Some((hit, value)) = hit {
        return Execution {
            outcome: Outcome::Hit(value.clone()),
            input_snapshot: snapshot(hit.cached),
            raw: hit.answer.clone(),
            provider: hit.provider.clone(),
            details: None,
        };
    }
    let last_called = reports
        .iter()
        .rev()
        .find(|r| r.request.is_some())
        .or(reports.last());
    let provider = last_called.map(|r| r.provider.clone()).unwrap_or_default();
    let summary = reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let what = match &r.outcome {
                StepOutcome::Hit(_) => "hit".to_string(),
                StepOutcome::Miss => "missed".to_string(),
                StepOutcome::MissingInput(p) => format!("lacked {}", p.join(", ")),
                StepOutcome::Retry { message, .. } | StepOutcome::Fail(message) => message.clone(),
                StepOutcome::Waiting(id) => format!("waiting for job {id}"),
            };
            format!("step {} ({}): {what}", i + 1, r.provider)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let retry_after = reports
        .iter()
        .filter_map(|r| match &r.outcome {
            StepOutcome::Retry { after, .. } => Some(*after),
            _ => None,
        })
        .reduce(|a, b| a.max(b));
    let any = |f: fn(&StepOutcome) -> bool| reports.iter().any(|r| f(&r.outcome));
    let (outcome, raw, details) = if let Some(after) = retry_after {
        let message = if reports.len() == 1 {
            summary_of_one(&reports[0])
        } else {
            format!("no step hit, and one may answer later: {summary}")
        };
        (
            Outcome::Retry {
                after: after.filter(|d| *d > Duration::ZERO),
                message,
            },
            last_called.and_then(|r| r.answer.clone()),
            Some(json!({ "steps": steps })),
        )
    } else if any(|o| matches!(o, StepOutcome::Miss)) {
        (
            Outcome::Miss,
            last_called.and_then(|r| r.answer.clone()),
            None,
        )
    } else if reports
        .iter()
        .all(|r| matches!(r.outcome, StepOutcome::MissingInput(_)))
    {
        let mut missing: Vec<String> = Vec::new();
        for r in &reports {
            if let StepOutcome::MissingInput(paths) = &r.outcome {
                for p in paths {
                    if !missing.contains(p) {
                        missing.push(p.clone());
                    }
                }
            }
        }
        return Execution {
            outcome: Outcome::MissingInput,
            input_snapshot: json!({"missing": missing, "steps": steps, "cached": false}),
            raw: None,
            provider,
            details: None,
        };
    } else {
        let message = if reports.len() == 1 {
            summary_of_one(&reports[0])
        } else {
            format!("every step failed: {summary}")
        };
        (
            Outcome::Fail(message),
            last_called.and_then(|r| r.answer.clone()),
            Some(json!({ "steps": steps })),
        )
    };
    Execution {
        outcome,
        input_snapshot: snapshot(false),
        raw,
        provider,
        details,
    }
}

/// The message of a one-step enrichment: the step's own.
fn summary_of_one(report: &StepReport) -> String {
    match &report.outcome {
        StepOutcome::Retry { message, .. } | StepOutcome::Fail(message) => message.clone(),
        StepOutcome::MissingInput(p) => format!("no value for {}", p.join(", ")),
        StepOutcome::Hit(_) => "hit".into(),
        StepOutcome::Miss => "missed".into(),
        StepOutcome::Waiting(id) => format!("waiting for job {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(provider: &str, outcome: StepOutcome) -> StepReport {
        StepReport {
            provider: provider.into(),
            outcome,
            request: Some(json!({})),
            answer: Some(json!({"from": provider})),
            cached: false,
        }
    }

    fn fail(m: &str) -> StepOutcome {
        StepOutcome::Fail(m.into())
    }

    fn retry(after: Option<u64>) -> StepOutcome {
        StepOutcome::Retry {
            after: after.map(Duration::from_secs),
            message: "HTTP 429".into(),
        }
    }

    #[test]
    fn a_hit_after_failures_is_a_hit_from_its_provider() {
        let e = conclude(vec![
            report("a", fail("HTTP 401")),
            report("b", StepOutcome::Miss),
            report("c", StepOutcome::Hit(json!("x"))),
        ]);
        assert_eq!(e.outcome, Outcome::Hit(json!("x")));
        assert_eq!(e.provider, "c");
        assert_eq!(e.raw, Some(json!({"from": "c"})));
        let steps = e.input_snapshot["steps"].as_array().unwrap();
        let outcomes: Vec<_> = steps.iter().map(|s| s["outcome"].clone()).collect();
        assert_eq!(outcomes, [json!("failed"), json!("miss"), json!("hit")]);
        assert_eq!(steps[0]["message"], "HTTP 401");
        assert_eq!(e.details, None);
    }

    #[test]
    fn nothing_hit_retry_beats_miss_beats_missing_input_beats_failure() {
        let e = conclude(vec![
            report("a", StepOutcome::Miss),
            report("b", retry(Some(2))),
            report("c", retry(None)),
        ]);
        assert!(
            matches!(e.outcome, Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(2))
        );
        let e = conclude(vec![
            report("a", fail("HTTP 400")),
            report("b", StepOutcome::Miss),
        ]);
        assert_eq!(e.outcome, Outcome::Miss);
        assert_eq!(e.provider, "b");
        let mut lacking = report("a", StepOutcome::MissingInput(vec!["lead.email".into()]));
        lacking.request = None;
        let e = conclude(vec![lacking.clone(), lacking]);
        assert_eq!(e.outcome, Outcome::MissingInput);
        assert_eq!(e.input_snapshot["missing"], json!(["lead.email"]));
        let e = conclude(vec![
            report("a", fail("HTTP 400")),
            report("b", fail("HTTP 401")),
        ]);
        let Outcome::Fail(message) = &e.outcome else {
            panic!("{:?}", e.outcome)
        };
        assert!(
            message.contains("step 1 (a): HTTP 400") && message.contains("step 2 (b): HTTP 401")
        );
        assert_eq!(e.details.unwrap()["steps"].as_array().unwrap().len(), 2);
    }
}
