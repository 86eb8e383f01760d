//! `POST /v1/realtime/client_secrets` in OpenAI's shape: a short-lived secret for a browser, `ek_` and one of the
//! gateway's session tokens behind it, bound to the model (and the voice) the session asks for.

use crate::api::body::Json;
use crate::api::errors::ApiError;
use crate::api::principal::{Admitted, CLIENT_SECRET_PREFIX};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_actors::catalogue::Modality;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    pub expires_after: Option<ExpiresAfter>,
    /// `{"type": "realtime", "model", "audio": {"output": {"voice"}}, …}`: kept and answered as given.
    #[schema(value_type = Object)]
    pub session: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiresAfter {
    pub anchor: Option<String>,
    pub seconds: Option<i64>,
}

/// A browser's client secret in OpenAI's shape: `{"value": "ek_…", "expires_at", "session"}`.
#[utoipa::path(post, path = "/v1/realtime/client_secrets", tag = "realtime", request_body = CreateSecret,
    responses((status = 200, description = "`{\"value\": \"ek_…\", \"expires_at\", \"session\"}`"),
        crate::api::docs::Authenticated, crate::api::docs::JsonBody,
        (status = 400, description = "invalid_field, unsupported_model (session.model)", body = crate::api::errors::ErrorBody),
        (status = 403, description = "model_not_allowed; api_key_required (a token cannot mint a secret)", body = crate::api::errors::ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
    Json(body): Json<CreateSecret>,
) -> Result<HttpResponse, ApiError> {
    if principal.session.is_some() {
        return Err(ApiError::api_key_required("mint a client secret"));
    }
    let seconds = body.expires_after.as_ref().and_then(|e| e.seconds).unwrap_or(600);
    if !(10..=7200).contains(&seconds) {
        return Err(ApiError::invalid_field("expires_after.seconds", "`expires_after.seconds` must be 10 to 7200"));
    }
    if body.expires_after.as_ref().and_then(|e| e.anchor.as_deref()).is_some_and(|a| a != "created_at") {
        return Err(ApiError::invalid_field("expires_after.anchor", "`expires_after.anchor` is `created_at`"));
    }
    let mut session = match body.session {
        None => json!({"type": "realtime"}),
        Some(Value::Object(map)) => Value::Object(map),
        Some(_) => return Err(ApiError::invalid_field("session", "`session` must be an object")),
    };
    let default = state.catalogue.models.values().find(|m| m.modality == Modality::Realtime).map(|m| m.name.clone());
    let model = match session.get("model") {
        None => default.ok_or_else(|| ApiError::missing_field("session.model"))?,
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(ApiError::invalid_field("session.model", "`session.model` must be a string")),
    };
    // A realtime model (relayed), or a chat model (a composed voice agent).
    let spec = state.catalogue.model(&model).filter(|m| matches!(m.modality, Modality::Realtime | Modality::Chat));
    let spec = spec.ok_or_else(|| ApiError::unsupported_model(&model).with_param("session.model"))?;
    if !principal.may_run(&spec.name) {
        return Err(ApiError::model_not_allowed(&spec.name).with_param("session.model"));
    }
    session["model"] = json!(spec.name);
    let (row, token) =
        crate::api::sessions::mint(&state, &principal, Some(vec![spec.name.clone()]), None, None, seconds).await?;
    let value = format!("{CLIENT_SECRET_PREFIX}{token}");
    Ok(HttpResponse::Ok().json(json!({"value": value, "expires_at": row.expires_at, "session": session})))
}
