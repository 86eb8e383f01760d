//! The published catalogue (002): `GET /api/marketplace/models` (filter by `modality` and `mode`) and
//! `GET /api/marketplace/models/{slug}`, each model with its modality, modes, prices, limits and whether it is
//! available now.

use super::contract;
use super::docs::Authenticated;
use super::errors::{ApiError, ErrorBody};
use super::principal::Admitted;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use switchyard_actors::{Credits, ModelSpec};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/marketplace/models").route(web::get().to(list_models)));
    cfg.service(super::resource("/api/marketplace/models/{slug}").route(web::get().to(get_model)));
}

/// One published model.
#[derive(Serialize, ToSchema)]
pub struct MarketplaceModel {
    pub slug: String,
    pub object: &'static str,
    pub description: String,
    /// `chat`, `image`, `speech`, `speech_to_speech`, `transcription` or `embedding`.
    pub modality: &'static str,
    /// The modes `POST /api/runs` accepts (`execute`, `index`, `search`).
    pub modes: Vec<&'static str>,
    /// Per mode, the `input` fields and `params` a run takes (`{type, required, description}` each) and what its
    /// `output` holds.
    #[schema(value_type = Object)]
    pub contract: Value,
    pub provider: String,
    /// Prices in credits: only the units this model is charged in.
    #[schema(value_type = Object)]
    pub pricing: Value,
    /// What a request may ask of the model.
    #[schema(value_type = Object)]
    pub limits: Value,
    pub fallback: Vec<String>,
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// Served by the built-in simulator (not a real model).
    pub simulator: bool,
}

#[derive(Serialize, ToSchema)]
pub struct MarketplaceList {
    pub object: &'static str,
    pub data: Vec<MarketplaceModel>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MarketplaceQuery {
    /// Only models of this modality.
    pub modality: Option<String>,
    /// Only models that run in this mode.
    pub mode: Option<String>,
}

const MODALITIES: [&str; 7] = ["chat", "image", "speech", "speech_to_speech", "transcription", "embedding", "realtime"];
const MODES: [&str; 3] = ["execute", "index", "search"];

fn pricing(model: &ModelSpec) -> Value {
    let p = &model.pricing;
    let mut out = Map::new();
    for (name, value) in [
        ("prompt_per_1k_tokens", p.prompt_per_1k),
        ("completion_per_1k_tokens", p.completion_per_1k),
        ("per_image", p.per_image),
        ("per_1k_characters", p.per_1k_characters),
        ("per_audio_second", p.per_audio_second),
        ("per_input", p.per_input),
    ] {
        if value != Credits::ZERO {
            out.insert(name.into(), json!(value));
        }
    }
    Value::Object(out)
}

fn limits(model: &ModelSpec) -> Value {
    let mut out = Map::new();
    if model.context_window > 0 {
        out.insert("context_window".into(), json!(model.context_window));
        out.insert("max_output_tokens".into(), json!(model.max_output_tokens));
    }
    if let Some(image) = &model.image {
        out.insert(
            "image".into(),
            json!({"min_size": image.min_size, "max_size": image.max_size, "size_multiple": image.size_multiple,
                   "max_steps": image.max_steps, "min_guidance": image.min_guidance, "max_guidance": image.max_guidance,
                   "steps_upstream": image.steps_upstream}),
        );
    }
    if let Some(audio) = &model.audio {
        if audio.max_characters > 0 {
            out.insert("max_characters".into(), json!(audio.max_characters));
        }
        if audio.max_seconds > 0 {
            out.insert("max_seconds".into(), json!(audio.max_seconds));
        }
    }
    if let Some(embedding) = model.embedding {
        out.insert("dimensions".into(), json!(embedding.dimensions));
        out.insert("max_tokens".into(), json!(embedding.max_tokens));
    }
    Value::Object(out)
}

fn entry(state: &AppState, model: &ModelSpec) -> MarketplaceModel {
    let provider = state.providers.for_model(model);
    let unavailable_reason = state.unavailable_reason(model);
    let available = unavailable_reason.is_none();
    MarketplaceModel {
        slug: model.name.clone(),
        object: "marketplace.model",
        description: model.description.clone(),
        modality: model.modality.as_str(),
        modes: contract::names(model.modality),
        contract: contract::describe(model.modality),
        provider: model.provider.clone(),
        pricing: pricing(model),
        limits: limits(model),
        fallback: model.fallback.clone(),
        available,
        unavailable_reason,
        simulator: provider.is_some_and(|p| p.is_simulator()),
    }
}

#[utoipa::path(
    get,
    path = "/api/marketplace/models",
    tag = "runs",
    params(MarketplaceQuery),
    responses((status = 200, description = "The published models", body = MarketplaceList), Authenticated, (status = 400, description = "invalid_field: an unknown modality or mode", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_models(
    state: web::Data<AppState>,
    _admitted: Admitted,
    query: web::Query<MarketplaceQuery>,
) -> Result<HttpResponse, ApiError> {
    if let Some(modality) = query.modality.as_deref().filter(|m| !MODALITIES.contains(m)) {
        return Err(ApiError::invalid_field(
            "modality",
            format!("Unknown modality `{modality}`: use one of {}", MODALITIES.join(", ")),
        ));
    }
    if let Some(mode) = query.mode.as_deref().filter(|m| !MODES.contains(m)) {
        return Err(ApiError::invalid_field("mode", format!("Unknown mode `{mode}`: use one of {}", MODES.join(", "))));
    }
    let data = state
        .catalogue
        .models
        .values()
        .filter(|m| query.modality.as_deref().is_none_or(|wanted| m.modality.as_str() == wanted))
        .filter(|m| query.mode.as_deref().is_none_or(|wanted| contract::mode(m.modality, wanted).is_some()))
        .map(|m| entry(&state, m))
        .collect();
    Ok(HttpResponse::Ok().json(MarketplaceList { object: "list", data }))
}

#[utoipa::path(
    get,
    path = "/api/marketplace/models/{slug}",
    tag = "runs",
    params(("slug" = String, Path)),
    responses(
        (status = 200, description = "One published model", body = MarketplaceModel),
        (status = 404, description = "not_found", body = ErrorBody),
        Authenticated,
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get_model(
    state: web::Data<AppState>,
    _admitted: Admitted,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let model = state
        .catalogue
        .model(&slug)
        .ok_or_else(|| ApiError::not_found(format!("No model `{}` in the marketplace", slug.as_str())))?;
    Ok(HttpResponse::Ok().json(entry(&state, model)))
}
