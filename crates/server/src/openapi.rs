//! The OpenAPI document (utoipa), served at `/openapi.json` and browsed with the vendored
//! Swagger UI at `/docs` (no CDN: it works in the forest).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::*;

/// The API description without its paths: the info, the schemas, the security schemes and the
/// tags. The paths come from the router's routes ([`crate::app`], [`document`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "El Silencio Acoustic Explorer API",
        description = "Species per 5 s window of a field recording (BirdCLEF 2025 taxonomy), \
                       a live stream mode, sessions, feedback and model administration."
    ),
    components(schemas(
        IdentifyJson, IdentifyResponse, WindowResult, SpeciesScore, Timing, SpeciesInfo,
        SpeciesList, ModelInfo, ModelsList, LoadModel, FeedbackRequest, Stored, ErrorBody,
        Health, StreamStart, StreamWindow, StreamSession,
        SessionSummary, SessionSpecies, Feedback, Verdict,
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

/// The whole document: [`ApiDoc`] with the paths of the routes [`crate::app`] serves (the same
/// route lists, without the layers).
pub fn document() -> utoipa::openapi::OpenApi {
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::v1_routes().merge(crate::keyed_routes()))
        .merge(crate::ops_routes())
        .into_openapi()
}
