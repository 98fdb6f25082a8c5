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

/// A model's licence on the wire.
pub fn licence(l: &silencio_infer::Licence) -> Licence {
    Licence {
        id: l.id.clone(),
        covers: l.covers.clone(),
    }
}

/// A licence status on the wire.
pub fn licence_status(s: silencio_infer::LicenceStatus) -> LicenceStatus {
    match s {
        silencio_infer::LicenceStatus::Commercial => LicenceStatus::Commercial,
        silencio_infer::LicenceStatus::NonCommercial => LicenceStatus::NonCommercial,
        silencio_infer::LicenceStatus::Unknown => LicenceStatus::Unknown,
    }
}

/// A blend on the wire.
pub fn blend(b: silencio_infer::Blend) -> Blend {
    match b {
        silencio_infer::Blend::Probability => Blend::Probability,
        silencio_infer::Blend::Rank => Blend::Rank,
    }
}
