//! The API's request and response bodies (what the OpenAPI document describes): declared once,
//! in `silencio-api`, which the clients use too; re-exported here.

pub use silencio_api::*;

/// One species of one window, as the API lists it.
pub fn species_score(s: silencio_infer::SpeciesScore) -> SpeciesScore {
    SpeciesScore {
        code: s.code,
        scientific_name: s.scientific_name,
        common_name: s.common_name,
        class_name: s.class_name,
        score: s.score,
    }
}
