//! An async step (`kind = "async"`, see `docs/providers.md` "Async steps"): submit a job, then
//! poll it, or read the callback the vendor posted, until its answer is ready.
//!
//! Each call does one request at most and returns: the item does not wait inside a worker.
//! Between calls it is `pending` with the job id stored (`Outcome::Waiting`), so it holds no
//! slot and no lease, and no attempt is spent. The final answer (poll or callback) is judged
//! like a sync step's (`miss_when`, `result_pointer`).

use std::sync::Arc;

use puffle_store::Submission;
use serde_json::{json, Value};

use super::configured::{
    build_request, judge, send, AsyncSpec, ProviderConfig, Step, StepOutcome, StepReport,
    SUBMISSION_ID,
};
use super::miss;
use super::waterfall::conclude;
use super::Execution;
use crate::clock::{ms, now_ms};
use crate::template::{self, Context};
use crate::throttle::Throttles;
use crate::Outcome;

/// One call of an async step for one item.
pub struct Call<'a> {
    pub client: &'a reqwest::Client,
    pub throttles: &'a Arc<Throttles>,
    pub provider: &'a ProviderConfig,
    pub step: &'a Step,
    pub spec: &'a AsyncSpec,
}

impl Call<'_> {
    /// Submit (no `submission` yet), else read the callback or poll.
    pub async fn run(&self, ctx: &Context, submission: Option<&Submission>) -> Execution {
        match submission {
            None => self.submit(ctx).await,
            Some(job) => self.resume(ctx, job).await,
        }
    }

    fn report(
        &self,
        outcome: StepOutcome,
        request: Option<Value>,
        answer: Option<Value>,
    ) -> StepReport {
        StepReport {
            provider: self.step.provider.clone(),
            outcome,
            request,
            answer,
            cached: false,
        }
    }

    /// Send `step`'s request; the outcome is judged by `step`'s own pointer and rules.
    async fn call(
        &self,
        step: &Step,
        ctx: &Context,
    ) -> (StepOutcome, Option<Value>, Option<Value>) {
        let request = match build_request(self.provider, step, ctx) {
            Ok(r) => r,
            Err(outcome) => return (outcome, None, None),
        };
        let shown = Some(request.shown.clone());
        let (outcome, answer) =
            send(self.client, self.throttles, self.provider, step, request).await;
        let secrets = self.provider.secrets();
        let outcome = secrets.scrub_outcome(outcome);
        (outcome, shown, answer.map(|a| secrets.scrub(a)))
    }

    async fn submit(&self, ctx: &Context) -> Execution {
        // The submit answer is a hit when it holds a job id.
        let submit = Step {
            result_pointer: Some(self.spec.submission_id_pointer.clone()),
            miss_when: Vec::new(),
            ..self.step.clone()
        };
        let (outcome, shown, answer) = self.call(&submit, ctx).await;
        let outcome = match outcome {
            StepOutcome::Hit(id) => match job_id(&id) {
                Some(id) => StepOutcome::Waiting(id),
                None => StepOutcome::Fail(self.no_job_id()),
            },
            StepOutcome::Miss => StepOutcome::Fail(self.no_job_id()),
            other => other,
        };
        self.conclude(outcome, shown, answer, false)
    }

    fn no_job_id(&self) -> String {
        format!(
            "provider {}'s answer to the submit has no job id at {}",
            self.provider.name, self.spec.submission_id_pointer
        )
    }

    async fn resume(&self, ctx: &Context, job: &Submission) -> Execution {
        let (outcome, shown, answer, callback_used) = match &job.callback {
            Some(body) => {
                // A callback is the poll's answer, delivered: no request.
                let value =
                    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.clone()));
                let value = self.provider.secrets().scrub(value);
                let shown = Some(json!({"callback": true}));
                (StepOutcome::Hit(value.clone()), shown, Some(value), true)
            }
            None => {
                let path = self
                    .spec
                    .poll_path
                    .replace(SUBMISSION_ID, &template::percent_encode(&job.id));
                // The whole answer first: `pending_when` looks at it before `result_pointer`.
                let poll = Step {
                    method: self.spec.poll_method.clone(),
                    path,
                    query: Vec::new(),
                    body: None,
                    result_pointer: None,
                    miss_when: Vec::new(),
                    ..self.step.clone()
                };
                let (outcome, shown, answer) = self.call(&poll, ctx).await;
                (outcome, shown, answer, false)
            }
        };
        let outcome = match outcome {
            StepOutcome::Hit(value) if miss::is_miss(&self.spec.pending_when, &value) => {
                let waited = now_ms().saturating_sub(job.submitted_at_ms);
                if waited >= ms(self.spec.max_wait) {
                    StepOutcome::Fail(format!(
                        "provider {}'s job {} was still pending after {} s (max_wait_seconds)",
                        self.provider.name,
                        job.id,
                        self.spec.max_wait.as_secs()
                    ))
                } else {
                    StepOutcome::Waiting(job.id.clone())
                }
            }
            StepOutcome::Hit(value) => judge(self.step, &value),
            other => other,
        };
        self.conclude(outcome, shown, answer, callback_used)
    }

    fn conclude(
        &self,
        outcome: StepOutcome,
        shown: Option<Value>,
        answer: Option<Value>,
        callback_used: bool,
    ) -> Execution {
        let report = self.report(outcome, shown, answer);
        match &report.outcome {
            StepOutcome::Waiting(id) => Execution {
                outcome: Outcome::Waiting {
                    submission_id: id.clone(),
                    after: self.spec.poll_interval,
                    callback_used,
                },
                input_snapshot: json!({"steps": [report.to_json()], "cached": false}),
                raw: report.answer.clone(),
                provider: report.provider.clone(),
                details: None,
            },
            _ => conclude(vec![report]),
        }
    }
}

/// A job id: a non-empty string, or a number written as text.
fn job_id(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
