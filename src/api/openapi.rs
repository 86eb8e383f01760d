//! The OpenAPI 3.1 document, generated from the handlers' annotations, and `GET /openapi.json` that serves it.

use super::{
    admin, billing, call, chat, download, embeddings, errors, image, marketplace, media, openai, ops, realtime, runs,
    sessions, speech, task, tasks,
};
use crate::store::Plan;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchyard", description = "A self-hosted AI gateway: chat, images and speech through one API key and one wallet; scoped vector index and search."),
    paths(
        task::create_task,
        runs::create_run,
        runs::knowledge::list_knowledge_bases,
        runs::knowledge::delete_knowledge_base,
        marketplace::list_models,
        marketplace::get_model,
        embeddings::create_embeddings,
        tasks::view::list_tasks,
        tasks::run::run_task,
        tasks::stats::revision_stats,
        tasks::admin::list,
        tasks::admin::get,
        tasks::admin::put,
        tasks::admin::delete,
        tasks::admin::add_revision,
        tasks::admin::patch_revision,
        openai::chat_completions,
        openai::list_models,
        openai::images_generations,
        openai::audio_speech,
        openai::audio_transcriptions,
        billing::wallet,
        billing::usage_summary,
        media::init,
        media::put,
        media::complete,
        download::download,
        admin::create_workspace,
        admin::get_workspace,
        admin::create_workspace_key,
        admin::top_up,
        admin::revoke_key,
        admin::update_key,
        realtime::connect,
        realtime::secrets::create,
        realtime::elevenlabs::speech,
        realtime::elevenlabs::transcription,
        sessions::create_session,
        sessions::delete_session,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi,
    ),
    components(schemas(
        errors::ErrorBody, errors::ErrorDetail, errors::ErrorType,
        chat::Completion, chat::Choice, chat::AssistantMessage, chat::UsageOut, chat::MessageIn, chat::StopIn,
        task::TaskChatRequest, openai::ChatCompletionRequest, openai::StreamOptions, openai::ModelList, openai::ModelEntry,
        admin::CreateWorkspace, admin::WorkspaceView, admin::KeyView, admin::NewKey, admin::CreateKey, admin::TopUp,
        admin::Balance, admin::Revoked, admin::UpdateKey, sessions::CreateSession, sessions::SessionView, Plan, ops::Health, call::Metadata, call::FallbackOut,
        billing::WalletView, billing::UsageSummary, crate::store::UsageTotals,
        openai::ImagesRequest, openai::ImagesResponse, openai::ImageOut,
        image::ImageTaskRequest, image::ImageGeneration, image::ImageData, image::ImageUsage,
        speech::SpeechTaskRequest, speech::ConversionTaskRequest, speech::TranscriptionTaskRequest,
        speech::SpeechGeneration, speech::AudioOut, speech::SpeechUsage, speech::Transcription,
        openai::SpeechCreateRequest, openai::TranscriptionOut, openai::WordOut, openai::TranscriptionUsage,
        tasks::RunRequest, tasks::TaskRun, tasks::RevisionRef, tasks::RunFile, tasks::RunMetadata, tasks::TaskView,
        tasks::RevisionView, tasks::TaskList, tasks::RevisionStats, tasks::StatsResponse,
        tasks::admin::RevisionPatch, tasks::admin::AdminTaskList,
        media::InitUpload, media::UploadTicket, media::CompleteUpload, media::MediaObject, media::Uploaded,
        runs::RunRequest, runs::RunResponse, runs::KnowledgeBase, runs::KnowledgeBaseList,
        marketplace::MarketplaceModel, marketplace::MarketplaceList,
        realtime::secrets::CreateSecret, realtime::secrets::ExpiresAfter,
        embeddings::EmbeddingsRequest, embeddings::EmbeddingsResponse, embeddings::EmbeddingItem, embeddings::EmbeddingsUsage,
    )),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(super::resource("/openapi.json").route(actix_web::web::get().to(openapi)));
}

#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn openapi() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(document())
}
