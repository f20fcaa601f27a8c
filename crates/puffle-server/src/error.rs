//! The one error type of the API and its envelope:
//! `{"error": {"code", "message"}}` plus the extra top-level fields some answers carry.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use puffle_domain::Invalid;
use puffle_store::StoreError;
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub enum ApiError {
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    /// 400; the message names the offending field.
    Invalid(String),
    InsufficientCredits {
        required: i64,
        balance: i64,
    },
    /// 409, with an optional `reason` discriminator.
    Conflict {
        message: String,
        reason: Option<&'static str>,
    },
    PayloadTooLarge(String),
    /// 431 **[ours]**: the request's headers are larger than the server accepts.
    HeadersTooLarge(String),
    /// 429, with `Retry-After` in whole seconds.
    RateLimited {
        retry_after: u64,
    },
    /// 500. The cause is logged, never sent.
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError::Invalid(format!("{field}: {message}"))
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::InsufficientCredits { .. } => {
                (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
            }
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_headers_too_large",
            ),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Invalid(inv) => inv.into(),
            StoreError::Conflict(message) => ApiError::Conflict {
                message,
                reason: None,
            },
            StoreError::StateConflict { reason, message } => ApiError::Conflict {
                message,
                reason: Some(reason),
            },
            StoreError::InsufficientCredits { required, balance } => {
                ApiError::InsufficientCredits { required, balance }
            }
            StoreError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::invalid(&e.field, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut extra = Map::new();
        let mut retry_after = None;
        let message = match self {
            ApiError::RateLimited { retry_after: secs } => {
                retry_after = Some(secs);
                format!("Too many requests with this API key; retry in {secs} s.")
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "Something went wrong on our side; the error has been logged.".to_string()
            }
            ApiError::InsufficientCredits { required, balance } => {
                extra.insert("required".into(), json!(required));
                extra.insert("balance".into(), json!(balance));
                format!("This needs {required} credits; the workspace has {balance}.")
            }
            ApiError::Conflict { message, reason } => {
                if let Some(reason) = reason {
                    extra.insert("reason".into(), json!(reason));
                }
                message
            }
            ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Invalid(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::HeadersTooLarge(m) => m,
        };
        let mut body = Map::new();
        body.insert("error".into(), json!({"code": code, "message": message}));
        body.extend(extra);
        let mut response = (status, Json(Value::Object(body))).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
