//! The quality gate: bars a model's report must clear before the registry promotes it.

use serde::{Deserialize, Serialize};

use crate::report::EvalReport;

/// A bar on one slice of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceThreshold {
    /// Slice dimension, e.g. `class` or `time_of_day`.
    pub dimension: String,
    /// Slice value, e.g. `Amphibia` or `dawn 05-08`.
    pub value: String,
    /// The slice's macro ROC-AUC must be at least this.
    pub min_macro_auc: f64,
}

/// The bars. Every field defaults to "no bar", so an empty config (`{}` or an empty TOML
/// table) passes everything.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// Minimum overall macro ROC-AUC.
    pub min_macro_auc: Option<f64>,
    /// Minimum overall macro AP.
    pub min_macro_ap: Option<f64>,
    /// Minimum macro ROC-AUC per slice.
    pub min_slice: Vec<SliceThreshold>,
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    /// True when every bar was cleared.
    pub passed: bool,
    /// One line per failed bar: the metric, its value and the bar.
    pub reasons: Vec<String>,
    /// One line per cleared bar, same form (for logs and the registry's audit trail).
    pub cleared: Vec<String>,
}

struct Check<'a> {
    metric: &'a str,
    scope: String,
    value: Option<f64>,
    bar: f64,
    missing_why: &'a str,
}

impl GateConfig {
    /// Checks `report` against every bar. A bar whose metric is missing from the report (no
    /// species scored, slice absent) fails, and so does a bar that is not a finite number.
    pub fn evaluate(&self, report: &EvalReport) -> GateDecision {
        let mut checks = Vec::new();
        if let Some(bar) = self.min_macro_auc {
            checks.push(Check {
                metric: "macro ROC-AUC",
                scope: "eval set".into(),
                value: report.overall.macro_auc,
                bar,
                missing_why: "no species has both a positive and a negative row",
            });
        }
        if let Some(bar) = self.min_macro_ap {
            checks.push(Check {
                metric: "macro AP",
                scope: "eval set".into(),
                value: report.overall.macro_ap,
                bar,
                missing_why: "no species has a positive row",
            });
        }
        for t in &self.min_slice {
            let slice = report.slice(&t.dimension, &t.value);
            checks.push(Check {
                metric: "macro ROC-AUC",
                scope: format!("slice {}={}", t.dimension, t.value),
                value: slice.and_then(|s| s.macro_auc),
                bar: t.min_macro_auc,
                missing_why: if slice.is_some() {
                    "no species in the slice has both a positive and a negative row"
                } else {
                    "the slice is not in the report"
                },
            });
        }

        let (mut reasons, mut cleared) = (Vec::new(), Vec::new());
        for c in checks {
            match c.value {
                _ if !c.bar.is_finite() => reasons.push(format!(
                    "{} bar {} is not a finite number ({})",
                    c.metric, c.bar, c.scope
                )),
                None => reasons.push(format!(
                    "{} missing: {} (bar {:.3}, {})",
                    c.metric, c.missing_why, c.bar, c.scope
                )),
                Some(v) if v.is_nan() || v < c.bar => {
                    reasons.push(format!("{} {v:.3} < {:.3} ({})", c.metric, c.bar, c.scope))
                }
                Some(v) => {
                    cleared.push(format!("{} {v:.3} >= {:.3} ({})", c.metric, c.bar, c.scope))
                }
            }
        }
        GateDecision {
            passed: reasons.is_empty(),
            reasons,
            cleared,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::{Confusion, OverallMetrics};
    use crate::slices::SliceResult;

    fn report(auc: Option<f64>, ap: Option<f64>) -> EvalReport {
        EvalReport {
            title: "t".into(),
            n_rows: 10,
            n_species: 2,
            overall: OverallMetrics {
                macro_auc: auc,
                macro_ap: ap,
                n_auc_scored: usize::from(auc.is_some()),
                n_ap_scored: usize::from(ap.is_some()),
            },
            per_class: vec![],
            slices: vec![SliceResult {
                dimension: "class".into(),
                value: "Amphibia".into(),
                n_rows: 10,
                n_species_scored: 1,
                macro_auc: Some(0.55),
                macro_ap: Some(0.2),
            }],
            pr_curves: vec![],
            confusion: Confusion::default(),
        }
    }

    #[test]
    fn empty_config_passes() {
        let d = GateConfig::default().evaluate(&report(None, None));
        assert!(d.passed && d.reasons.is_empty());
        let parsed: GateConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, GateConfig::default());
    }

    #[test]
    fn reasons_state_value_and_bar() {
        let cfg: GateConfig = serde_json::from_str(
            r#"{"min_macro_auc": 0.7, "min_macro_ap": 0.1,
                "min_slice": [{"dimension": "class", "value": "Amphibia", "min_macro_auc": 0.6},
                              {"dimension": "class", "value": "Mammalia", "min_macro_auc": 0.5}]}"#,
        )
        .unwrap();
        let d = cfg.evaluate(&report(Some(0.612), Some(0.3)));
        assert!(!d.passed);
        assert_eq!(
            d.reasons,
            vec![
                "macro ROC-AUC 0.612 < 0.700 (eval set)",
                "macro ROC-AUC 0.550 < 0.600 (slice class=Amphibia)",
                "macro ROC-AUC missing: the slice is not in the report (bar 0.500, slice class=Mammalia)",
            ]
        );
        assert_eq!(d.cleared, vec!["macro AP 0.300 >= 0.100 (eval set)"]);
    }

    #[test]
    fn missing_metric_fails() {
        let cfg = GateConfig {
            min_macro_auc: Some(0.5),
            ..GateConfig::default()
        };
        let d = cfg.evaluate(&report(None, None));
        assert!(!d.passed);
        assert!(d.reasons[0].contains("missing"), "{:?}", d.reasons);
        let nan_bar = GateConfig {
            min_macro_ap: Some(f64::NAN),
            ..GateConfig::default()
        };
        assert!(!nan_bar.evaluate(&report(Some(0.9), Some(0.9))).passed);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_str::<GateConfig>(r#"{"min_auc": 0.7}"#).is_err());
    }
}
