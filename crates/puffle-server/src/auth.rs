//! Who is calling: the `Authorization: Bearer pk_live_…` key, and the effective user
//! (`X-Puffle-Effective-User`, admins only, same workspace only).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use puffle_domain::account::{ApiKey, Role, User};
use puffle_store::StoreError;

use crate::app::AppState;
use crate::error::ApiError;

pub const EFFECTIVE_USER_HEADER: &str = "x-puffle-effective-user";

/// The token of `Authorization: Bearer <token>`, if the header has that shape.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// An authenticated request.
pub struct Auth {
    /// The id of the key the request was made with.
    pub key_id: String,
    /// The key's owner.
    pub user: User,
    /// The user the request acts as: `user`, or the one an admin impersonates.
    pub effective: User,
}

impl Auth {
    pub fn workspace(&self) -> &str {
        &self.user.workspace_id
    }
}

/// An authenticated request by an admin key; anyone else gets `403` before the body is read.
pub struct Admin(pub Auth);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = Auth::from_request_parts(parts, state).await?;
        match auth.user.role {
            Role::Admin => Ok(Admin(auth)),
            Role::Member => Err(ApiError::Forbidden("This needs an admin API key.".into())),
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::Unauthorized(m.to_string());
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Err(unauthorized(
                "Missing Authorization header: send `Authorization: Bearer pk_live_…`.",
            ));
        }
        let token = bearer_token(&parts.headers)
            .ok_or_else(|| unauthorized("The Authorization header must be `Bearer <API key>`."))?;
        let key = ApiKey::parse(token).ok_or_else(|| {
            unauthorized("The API key is malformed (expected pk_live_ and 64 hex characters).")
        })?;
        let caller = state
            .store
            .authenticate(&key)
            .await?
            .ok_or_else(|| unauthorized("The API key is unknown or has been revoked."))?;

        let effective = match parts.headers.get(EFFECTIVE_USER_HEADER) {
            None => caller.user.clone(),
            Some(v) if v.as_bytes().is_empty() => caller.user.clone(),
            Some(v) => {
                if caller.user.role != Role::Admin {
                    return Err(ApiError::Forbidden(
                        "Only admin keys may act as another user.".into(),
                    ));
                }
                let forbidden = || {
                    ApiError::Forbidden(
                        "X-Puffle-Effective-User must name a user of your workspace.".into(),
                    )
                };
                let id = v.to_str().map_err(|_| forbidden())?.trim();
                match state.store.user(&caller.user.workspace_id, id).await {
                    Ok(user) => user,
                    Err(StoreError::NotFound(_)) => return Err(forbidden()),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Auth {
            key_id: caller.key_id,
            user: caller.user,
            effective,
        })
    }
}
