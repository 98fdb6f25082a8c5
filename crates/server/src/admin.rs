//! Model administration (API key): load a version as a canary, promote it, roll back.
//! Every change is one swap of the routing table; requests in flight keep the version they
//! were routed to (see [`crate::state`]).

use std::path::Path;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use silencio_infer::ModelSpec;
use silencio_infer::spec::RegistryRef;

use crate::api::{ErrorBody, LoadModel, ModelsList};
use crate::routes::{json_body, models_list};
use crate::state::{AppState, Canary, Routing};
use crate::{Error, Result};

/// The model the request names, with where it comes from.
fn requested(state: &AppState, req: &LoadModel) -> Result<(ModelSpec, String)> {
    let registry = &state.config().registry;
    match (&req.path, &req.registry_version) {
        (Some(p), None) => Ok((ModelSpec::from_path(Path::new(p), registry)?, p.clone())),
        (None, Some(v)) => {
            if !silencio_common::registry::is_plain_version(v) {
                return Err(Error::BadRequest(format!("invalid registry version {v:?}")));
            }
            let spec = ModelSpec::Registry {
                root: registry.clone(),
                reference: RegistryRef::Named(v.clone()),
            };
            Ok((spec, format!("registry:{v}")))
        }
        _ => Err(Error::BadRequest(
            "give exactly one of `path` and `registry_version`".into(),
        )),
    }
}

/// A bundle the client pointed at that cannot be opened is the client's problem (422), not
/// the server's.
fn bundle_error(e: Error) -> Error {
    match e {
        Error::Infer(
            i @ (silencio_infer::Error::Bundle { .. }
            | silencio_infer::Error::Io { .. }
            | silencio_infer::Error::Registry { .. }
            | silencio_infer::Error::Spec(_)
            | silencio_infer::Error::Ensemble(_)),
        ) => Error::Invalid(i.to_string()),
        other => other,
    }
}

/// Loads a model (a bundle or an ensemble: a path, or a registry version or alias) as the canary, taking `share` of identify traffic (replaces a canary
/// already loaded).
#[utoipa::path(post, path = "/v1/admin/models", tag = "models",
    request_body = LoadModel,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Loaded, warmed up and routed", body = ModelsList),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "Its licences forbid this (commercial) deployment", body = ErrorBody),
        (status = 409, description = "That version already serves as stable", body = ErrorBody),
        (status = 422, description = "Not a valid bundle or ensemble, or it needs BirdNET", body = ErrorBody),
    )
)]
pub async fn load_model(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ModelsList>)> {
    let req: LoadModel = json_body(&headers, body).await?;
    let share = req.share.unwrap_or(state.config().default_canary_share);
    if !(0.0..=1.0).contains(&share) {
        return Err(Error::BadRequest(format!(
            "share must be in [0, 1], got {share}"
        )));
    }
    let (spec, source) = requested(&state, &req).map_err(bundle_error)?;
    let _admin = state.admin_lock().await;
    let serves_already = |version: &str| {
        state
            .routing()
            .stable
            .as_ref()
            .is_some_and(|s| s.model_version() == version)
    };
    let conflict =
        |version: &str| Error::Conflict(format!("{version} already serves as the stable version"));
    // One bundle is checked before it loads; an ensemble's name is known once it has.
    let resolved = spec.resolve().map_err(|e| bundle_error(e.into()))?;
    if let (true, [(silencio_infer::Leaf::Bundle(dir), _)]) =
        (resolved.single, resolved.members.as_slice())
    {
        let d = dir.clone();
        let version = tokio::task::spawn_blocking(move || silencio_infer::ModelBundle::open(&d))
            .await
            .map_err(|e| Error::Internal(format!("bundle check failed: {e}")))?
            .map_err(|e| bundle_error(e.into()))?
            .meta()
            .model_version();
        if serves_already(&version) {
            return Err(conflict(&version));
        }
    }
    let model = state.load(spec, source).await.map_err(bundle_error)?;
    let version = model.model_version();
    if serves_already(&version) {
        return Err(conflict(&version));
    }
    state.swap(|r| Routing {
        stable: r.stable.clone(),
        canary: Some(Canary {
            model: model.clone(),
            share,
        }),
        previous: r.previous.clone(),
    });
    tracing::info!(model = %version, share, "canary loaded");
    Ok((StatusCode::CREATED, Json(models_list(&state, true))))
}

/// The canary becomes the stable version (all traffic); the old stable is kept for rollback.
#[utoipa::path(post, path = "/v1/admin/promote", tag = "models",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Promoted", body = ModelsList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 409, description = "No canary loaded", body = ErrorBody),
    )
)]
pub async fn promote(State(state): State<AppState>) -> Result<Json<ModelsList>> {
    let _admin = state.admin_lock().await;
    let r = state.routing();
    let Some(canary) = &r.canary else {
        return Err(Error::Conflict("no canary to promote".into()));
    };
    let promoted = canary.model.model_version();
    state.swap(|r| Routing {
        previous: r.stable.clone(),
        stable: Some(canary.model.clone()),
        canary: None,
    });
    tracing::info!(model = %promoted, "canary promoted to stable");
    Ok(Json(models_list(&state, true)))
}

/// Drops the canary if there is one; otherwise returns to the previous stable version.
#[utoipa::path(post, path = "/v1/admin/rollback", tag = "models",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Rolled back", body = ModelsList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 409, description = "Nothing to roll back to", body = ErrorBody),
    )
)]
pub async fn rollback(State(state): State<AppState>) -> Result<Json<ModelsList>> {
    let _admin = state.admin_lock().await;
    let r = state.routing();
    if let Some(c) = &r.canary {
        tracing::info!(model = %c.model.model_version(), "canary dropped");
        state.swap(|r| Routing {
            canary: None,
            ..r.clone()
        });
    } else if let Some(p) = &r.previous {
        tracing::info!(model = %p.model_version(), "rolled back to the previous stable version");
        state.swap(|_| Routing {
            stable: Some(p.clone()),
            canary: None,
            previous: None,
        });
    } else {
        return Err(Error::Conflict(
            "nothing to roll back: no canary and no previous stable version".into(),
        ));
    }
    Ok(Json(models_list(&state, true)))
}
