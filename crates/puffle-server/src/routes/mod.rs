//! The router: one module per resource, and the layers every request passes through.

mod account;
mod credits;
mod csv;
mod enrichments;
mod leads;
mod lists;
mod provider_callbacks;
mod service;
mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

pub use service::Metrics;

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .merge(account::router())
        .merge(leads::router())
        .merge(lists::router())
        .merge(credits::router())
        .merge(enrichments::router())
        .merge(service::router())
        .merge(webhooks::router())
        // Async provider callbacks (docs/providers.md "Async steps").
        .merge(provider_callbacks::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(reject_nul_in_url))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::guard,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        // Outermost, so that limit refusals and panics carry a request id and are counted.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::observe::request_context,
        ))
        .with_state(state)
}

/// No id, filter or cursor can hold a NUL character (PostgreSQL text cannot store one), so a URL
/// carrying `%00` is refused whole, the same on every backend, before any handler sees it.
async fn reject_nul_in_url(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        return ApiError::Invalid("the URL contains a NUL character (%00)".into()).into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound("No such endpoint.".into())
}

async fn method_not_allowed() -> Response {
    let body = serde_json::json!({"error": {
        "code": "method_not_allowed",
        "message": "This endpoint does not accept this HTTP method."
    }});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// A panic is a bug: log it, answer the plain 500 envelope, keep serving.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("a request handler panicked".into()).into_response()
}
