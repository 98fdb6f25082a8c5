//! The OpenAPI document (utoipa), served at `/openapi.json` and browsed with the vendored
//! Swagger UI at `/docs` (no CDN: it works in the forest).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::*;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "El Silencio Acoustic Explorer API",
        description = "Species per 5 s window of a field recording (BirdCLEF 2025 taxonomy), \
                       a live stream mode, sessions, feedback and model administration."
    ),
    paths(
        crate::routes::identify,
        crate::routes::species,
        crate::routes::models,
        crate::routes::healthz,
        crate::routes::readyz,
        crate::routes::metrics,
        crate::routes::session,
        crate::routes::feedback,
        crate::stream::stream,
        crate::admin::load_model,
        crate::admin::promote,
        crate::admin::rollback,
    ),
    components(schemas(
        IdentifyJson, IdentifyResponse, WindowResult, SpeciesScore, Timing, SpeciesInfo,
        SpeciesList, ModelInfo, ModelsList, LoadModel, FeedbackRequest, Stored, ErrorBody,
        Health, StreamStart, StreamWindow, StreamSession,
        crate::sessions::SessionSummary, crate::feedback::Feedback, crate::feedback::Verdict,
    )),
    modifiers(&KeyAuth),
    tags(
        (name = "identify", description = "Species in recordings and live streams"),
        (name = "sessions", description = "Species per outing"),
        (name = "feedback", description = "Corrections from the field"),
        (name = "models", description = "Loaded versions, canary, promote, rollback"),
        (name = "ops", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// Write endpoints take the key as a bearer token or an `X-API-Key` header.
struct KeyAuth;

impl Modify for KeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
