//! An MLflow tracking server through its REST API (`/api/2.0/mlflow/…`), artifacts through the
//! server's artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/…`).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::http::{Flavor, Http, str_field};
use crate::tracking::{Metric, RunStatus};
use crate::{Error, Result};

/// MLflow's `log-batch` limits (`mlflow/utils/validation.py`).
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// Params per `log-batch` request.
pub const MAX_PARAMS_PER_BATCH: usize = 100;
/// Tags per `log-batch` request.
pub const MAX_TAGS_PER_BATCH: usize = 100;
/// Metrics + params + tags per `log-batch` request.
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
/// MLflow refuses requests over 1 MB; stay clear of it with room for JSON overhead.
const MAX_BATCH_BYTES: usize = 900_000;

/// A tracking server.
#[derive(Debug, Clone)]
pub struct RestStore {
    http: Http,
}

const API: &str = "/api/2.0/mlflow";

impl RestStore {
    /// A client of the server at `base` (`http://host:port`, optionally with a path prefix).
    pub fn new(base: &str) -> Result<Self> {
        if base.starts_with("https://") && !cfg!(feature = "tls") {
            return Err(Error::UnsupportedUri {
                uri: base.to_string(),
                reason: "https needs silencio-mlops' `tls` feature".into(),
            });
        }
        Ok(RestStore {
            http: Http::new(base, Flavor::Mlflow),
        })
    }

    pub(crate) fn base(&self) -> &str {
        self.http.base()
    }

    pub(crate) fn http(&self) -> &Http {
        &self.http
    }

    /// The id of the active experiment `name`.
    pub fn experiment_by_name(&self, name: &str) -> Result<Option<String>> {
        let ep = "experiments/get-by-name";
        match self
            .http
            .get_json(&format!("{API}/{ep}"), &[("experiment_name", name)])
        {
            Ok(v) => {
                let exp = v.get("experiment").ok_or_else(|| Error::Protocol {
                    endpoint: ep.into(),
                    message: "no experiment in the answer".into(),
                })?;
                if exp.get("lifecycle_stage").and_then(Value::as_str) == Some("deleted") {
                    return Err(Error::ExperimentDeleted {
                        name: name.to_string(),
                    });
                }
                str_field(ep, exp, "experiment_id").map(Some)
            }
            Err(e) if e.mlflow_error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id of experiment `name`, created if absent.
    pub fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        if let Some(id) = self.experiment_by_name(name)? {
            return Ok(id);
        }
        let ep = "experiments/create";
        match self
            .http
            .post_json(&format!("{API}/{ep}"), &json!({ "name": name }))
        {
            Ok(v) => str_field(ep, &v, "experiment_id"),
            // Someone else created it between our two calls.
            Err(e) if e.mlflow_error_code() == Some("RESOURCE_ALREADY_EXISTS") => {
                self.experiment_by_name(name)?.ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        user: &str,
        start_time: i64,
        tags: &[(String, String)],
    ) -> Result<RestRun> {
        let ep = "runs/create";
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        let v = self.http.post_json(
            &format!("{API}/{ep}"),
            &json!({
                "experiment_id": experiment_id,
                "user_id": user,
                "run_name": run_name,
                "start_time": start_time,
                "tags": tags,
            }),
        )?;
        self.run_from_answer(ep, &v)
    }

    /// The run that a `runs/create` or `runs/get` answer describes.
    fn run_from_answer(&self, ep: &str, v: &Value) -> Result<RestRun> {
        let info = v
            .get("run")
            .and_then(|r| r.get("info"))
            .ok_or_else(|| Error::Protocol {
                endpoint: ep.into(),
                message: "no run.info in the answer".into(),
            })?;
        Ok(RestRun {
            store: self.clone(),
            run_id: str_field(ep, info, "run_id")?,
            experiment_id: str_field(ep, info, "experiment_id")?,
            artifact_uri: str_field(ep, info, "artifact_uri")?,
        })
    }
}

impl RestStore {
    /// Reopens run `run_id` on the server and marks it RUNNING again.
    pub(crate) fn resume_run(&self, run_id: &str) -> Result<RestRun> {
        let ep = "runs/get";
        let v = self
            .http
            .get_json(&format!("{API}/{ep}"), &[("run_id", run_id)])?;
        let run = self.run_from_answer(ep, &v)?;
        self.http.post_json(
            &format!("{API}/runs/update"),
            &json!({ "run_id": run_id, "status": "RUNNING" }),
        )?;
        Ok(run)
    }
}

/// A run on a tracking server.
#[derive(Debug)]
pub(crate) struct RestRun {
    store: RestStore,
    pub(crate) run_id: String,
    pub(crate) experiment_id: String,
    pub(crate) artifact_uri: String,
}

/// JSON for a metric value: MLflow's proto JSON takes NaN and infinities as strings.
fn metric_value(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

/// One `log-batch` request's worth of entities.
#[derive(Default)]
struct Batch {
    metrics: Vec<Value>,
    params: Vec<Value>,
    tags: Vec<Value>,
    bytes: usize,
}

impl Batch {
    fn len(&self) -> usize {
        self.metrics.len() + self.params.len() + self.tags.len()
    }
}

/// Splits entities into requests within MLflow's limits, params first (as MLflow's own client
/// does, so a param error surfaces before metrics are written).
fn split_batches(metrics: &[Metric], params: &[(&str, &str)], tags: &[(&str, &str)]) -> Vec<Batch> {
    enum Kind {
        Metric,
        Param,
        Tag,
    }
    let mut out = vec![Batch::default()];
    let entities = params
        .iter()
        .map(|(k, v)| (Kind::Param, json!({ "key": k, "value": v })))
        .chain(
            tags.iter()
                .map(|(k, v)| (Kind::Tag, json!({ "key": k, "value": v }))),
        )
        .chain(metrics.iter().map(|m| {
            (
                Kind::Metric,
                json!({
                    "key": m.key,
                    "value": metric_value(m.value),
                    "timestamp": m.timestamp_ms,
                    "step": m.step,
                }),
            )
        }));
    for (kind, value) in entities {
        let size = value.to_string().len() + 1;
        let full = {
            let b = out.last();
            b.is_some_and(|b| {
                b.len() >= MAX_ENTITIES_PER_BATCH
                    || b.bytes + size > MAX_BATCH_BYTES
                    || match kind {
                        Kind::Metric => b.metrics.len() >= MAX_METRICS_PER_BATCH,
                        Kind::Param => b.params.len() >= MAX_PARAMS_PER_BATCH,
                        Kind::Tag => b.tags.len() >= MAX_TAGS_PER_BATCH,
                    }
            })
        };
        if full {
            out.push(Batch::default());
        }
        if let Some(b) = out.last_mut() {
            b.bytes += size;
            match kind {
                Kind::Metric => b.metrics.push(value),
                Kind::Param => b.params.push(value),
                Kind::Tag => b.tags.push(value),
            }
        }
    }
    out.retain(|b| b.len() > 0);
    out
}

impl RestRun {
    pub(crate) fn log_batch(
        &self,
        metrics: &[Metric],
        params: &[(&str, &str)],
        tags: &[(&str, &str)],
    ) -> Result<()> {
        for b in split_batches(metrics, params, tags) {
            self.store.http.post_json(
                &format!("{API}/runs/log-batch"),
                &json!({
                    "run_id": self.run_id,
                    "metrics": b.metrics,
                    "params": b.params,
                    "tags": b.tags,
                }),
            )?;
        }
        Ok(())
    }

    pub(crate) fn set_tags(&self, tags: &[(&str, &str)]) -> Result<()> {
        if let [(k, v)] = tags {
            self.store.http.post_json(
                &format!("{API}/runs/set-tag"),
                &json!({ "run_id": self.run_id, "key": k, "value": v }),
            )?;
            return Ok(());
        }
        self.log_batch(&[], &[], tags)
    }

    pub(crate) fn end(&self, status: RunStatus, end_time: i64) -> Result<()> {
        self.store.http.post_json(
            &format!("{API}/runs/update"),
            &json!({
                "run_id": self.run_id,
                "status": status.as_str(),
                "end_time": end_time,
            }),
        )?;
        Ok(())
    }

    pub(crate) fn log_artifacts(&self, files: &[(PathBuf, String)]) -> Result<()> {
        match artifact_target(self.store.base(), &self.artifact_uri)? {
            ArtifactTarget::Proxy(base) => {
                let http = if base == self.store.base() {
                    self.store.http.clone()
                } else {
                    Http::new(&base, Flavor::Mlflow)
                };
                for (src, rel) in files {
                    http.put_file(
                        &format!(
                            "/api/2.0/mlflow-artifacts/artifacts/{}/{}",
                            crate::fsutil::encode_path(&base_path_of(&self.artifact_uri)),
                            crate::fsutil::encode_path(rel)
                        ),
                        src,
                    )?;
                }
                Ok(())
            }
            ArtifactTarget::Local(dir) => {
                crate::fsutil::create_dir_all(&dir)?;
                for (src, rel) in files {
                    let mut dest = dir.clone();
                    for part in rel.split('/') {
                        dest.push(part);
                    }
                    crate::fsutil::copy_file_atomic(src, &dest, &dir)?;
                }
                Ok(())
            }
        }
    }
}

enum ArtifactTarget {
    /// Upload through the server at this base URL.
    Proxy(String),
    /// The server stores artifacts in a directory this machine can write (same host).
    Local(PathBuf),
}

/// Where a run's artifacts go, from its artifact URI.
fn artifact_target(tracking_base: &str, uri: &str) -> Result<ArtifactTarget> {
    if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
        if let Some(authority) = rest.strip_prefix("//") {
            // mlflow-artifacts://host:port/path: the proxy on that host.
            let host = authority.split('/').next().unwrap_or("");
            if !host.is_empty() {
                let scheme = if tracking_base.starts_with("https://") {
                    "https"
                } else {
                    "http"
                };
                return Ok(ArtifactTarget::Proxy(format!("{scheme}://{host}")));
            }
        }
        return Ok(ArtifactTarget::Proxy(tracking_base.to_string()));
    }
    if (uri.starts_with("http://") || uri.starts_with("https://"))
        && let Some(i) = uri.find("/api/2.0/mlflow-artifacts/artifacts/")
    {
        return Ok(ArtifactTarget::Proxy(uri[..i].to_string()));
    }
    if let Some(path) = crate::fsutil::file_uri_to_path(uri) {
        return Ok(ArtifactTarget::Local(path));
    }
    if uri.starts_with('/') {
        return Ok(ArtifactTarget::Local(PathBuf::from(uri)));
    }
    Err(Error::UnsupportedUri {
        uri: uri.to_string(),
        reason: "artifacts can go through an MLflow artifact proxy (mlflow-artifacts:/, \
                 `mlflow server --serve-artifacts`, the default) or to a local directory; \
                 other stores (s3://, gs://) are not supported"
            .into(),
    })
}

/// The path of a proxied artifact URI below the proxy's route
/// (`mlflow-artifacts:/1/<run>/artifacts` → `1/<run>/artifacts`).
fn base_path_of(uri: &str) -> String {
    let path = if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
        match rest.strip_prefix("//") {
            Some(a) => a.find('/').map(|i| &a[i..]).unwrap_or(""),
            None => rest,
        }
        .to_string()
    } else if let Some(i) = uri.find("/api/2.0/mlflow-artifacts/artifacts/") {
        crate::fsutil::decode_percent(&uri[i + "/api/2.0/mlflow-artifacts/artifacts/".len()..])
    } else {
        uri.to_string()
    };
    path.trim_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_limits() {
        let metrics: Vec<Metric> = (0..2500).map(|i| Metric::at("m", i as f64, i, 0)).collect();
        let pk: Vec<String> = (0..150).map(|i| format!("p{i}")).collect();
        let params: Vec<(&str, &str)> = pk.iter().map(|k| (k.as_str(), "v")).collect();
        let tags = [("t", "v")];
        let batches = split_batches(&metrics, &params, &tags);
        let (mut m, mut p, mut t) = (0, 0, 0);
        for b in &batches {
            assert!(b.metrics.len() <= MAX_METRICS_PER_BATCH);
            assert!(b.params.len() <= MAX_PARAMS_PER_BATCH);
            assert!(b.tags.len() <= MAX_TAGS_PER_BATCH);
            assert!(b.len() <= MAX_ENTITIES_PER_BATCH);
            m += b.metrics.len();
            p += b.params.len();
            t += b.tags.len();
        }
        assert_eq!((m, p, t), (2500, 150, 1));
        // 150 params: 100 + 50, then 1 tag + 949 metrics fill the second request.
        assert_eq!(batches[0].params.len(), 100);
        assert!(split_batches(&[], &[], &[]).is_empty());
        // Big values split on bytes.
        let big = "x".repeat(6000);
        let many: Vec<(&str, &str)> = pk
            .iter()
            .take(100)
            .map(|k| (k.as_str(), big.as_str()))
            .collect();
        let tagbig = "y".repeat(8000);
        let tk: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let tg: Vec<(&str, &str)> = tk.iter().map(|k| (k.as_str(), tagbig.as_str())).collect();
        for b in split_batches(&[], &many, &tg) {
            assert!(b.bytes <= MAX_BATCH_BYTES);
        }
    }

    #[test]
    fn artifact_targets() {
        let uri = "mlflow-artifacts:/1/abc/artifacts";
        assert!(
            matches!(artifact_target("http://h:5000", uri).unwrap(), ArtifactTarget::Proxy(b) if b == "http://h:5000")
        );
        assert_eq!(base_path_of(uri), "1/abc/artifacts");
        let uri2 = "mlflow-artifacts://other:80/x/y";
        assert!(
            matches!(artifact_target("http://h:5000", uri2).unwrap(), ArtifactTarget::Proxy(b) if b == "http://other:80")
        );
        assert_eq!(base_path_of(uri2), "x/y");
        let uri3 = "http://h:1/api/2.0/mlflow-artifacts/artifacts/a%20b/c";
        assert_eq!(base_path_of(uri3), "a b/c");
        assert!(matches!(
            artifact_target("http://h", "file:///tmp/x").unwrap(),
            ArtifactTarget::Local(_)
        ));
        assert!(artifact_target("http://h", "s3://b/x").is_err());
        assert_eq!(metric_value(f64::NAN), json!("NaN"));
    }
}
