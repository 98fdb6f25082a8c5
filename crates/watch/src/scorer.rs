//! What scores a file: a model in this process (any model spec, opened by the same facade
//! the offline commands use), or the HTTP server (`POST /v1/identify`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use silencio_api::{ErrorBody, IdentifyQuery, IdentifyResponse, SpeciesList};
use silencio_infer::Scorer as Model;

use crate::{Error, Result};

/// BirdCLEF rows are 5 s windows every 5 s.
const WINDOW_S: f64 = 5.0;

/// Per-window probabilities of one file.
#[derive(Debug, Clone)]
pub struct Scores {
    /// `name@version` of the model that scored it.
    pub model_version: String,
    /// Species codes in column order.
    pub species: Arc<Vec<String>>,
    /// One row per 5 s window, one value per species.
    pub rows: Vec<Vec<f32>>,
    /// Seconds of audio scored.
    pub audio_s: f64,
}

/// The model behind the consumer.
#[derive(Debug)]
pub enum Scorer {
    /// A model loaded in this process.
    Local(Box<Model>),
    /// The inference server.
    Server(ServerClient),
}

impl Scorer {
    /// A local model; refuses one whose windows are not BirdCLEF's 5 s grid.
    pub fn local(c: Model) -> Result<Self> {
        let w = c.window();
        if (w.length_s - WINDOW_S).abs() > 1e-9 || (w.hop_s - WINDOW_S).abs() > 1e-9 {
            return Err(Error::InvalidOptions(format!(
                "model {} cuts {} s windows every {} s; BirdCLEF rows are 5 s windows every 5 s",
                c.name(),
                w.length_s,
                w.hop_s
            )));
        }
        Ok(Scorer::Local(Box::new(c)))
    }

    /// Splits into the engines of `n` workers: one for a local model (it already uses every
    /// core; a second copy would only double the memory), `n` for the server (requests in
    /// flight at once).
    pub fn into_workers(self, n: usize) -> Vec<Scorer> {
        match self {
            Scorer::Local(c) => vec![Scorer::Local(c)],
            Scorer::Server(s) => (0..n.max(1)).map(|_| Scorer::Server(s.clone())).collect(),
        }
    }

    /// Scores the encoded recording `bytes` (file name `name`, for its type).
    pub fn score(&self, bytes: Vec<u8>, name: &str) -> Result<Scores> {
        match self {
            Scorer::Local(c) => {
                let id = c.identify_in(
                    bytes,
                    &silencio_infer::RecordingContext::from_file_name(name),
                )?;
                Ok(Scores {
                    model_version: id.model_version.clone(),
                    species: Arc::new(id.species.iter().map(|s| s.code.clone()).collect()),
                    audio_s: id.audio.as_ref().map_or(0.0, |a| a.duration_s),
                    rows: id.windows.into_iter().map(|w| w.scores).collect(),
                })
            }
            Scorer::Server(s) => s.score(&bytes[..], name),
        }
    }

    /// Scores the recording open as `file` (file name `name`, for its type), reading it as a
    /// stream: never whole into memory. A local model decodes that very open file (on Linux
    /// through `/proc/self/fd`, so a name swapped for a link after the file was opened is not
    /// followed), stopping at the classifier's maximum duration; the server gets it as the
    /// request body, read as it is sent.
    pub fn score_file(&self, file: &std::fs::File, path: &Path, name: &str) -> Result<Scores> {
        match self {
            Scorer::Local(c) => {
                // The context (recorder, hour) comes from the real name, not the fd path.
                let ctx = silencio_infer::RecordingContext::from_path(path);
                let id = c.identify_path_in(open_file_path(file, path), &ctx)?;
                Ok(Scores {
                    model_version: id.model_version.clone(),
                    species: Arc::new(id.species.iter().map(|s| s.code.clone()).collect()),
                    audio_s: id.audio.as_ref().map_or(0.0, |a| a.duration_s),
                    rows: id.windows.into_iter().map(|w| w.scores).collect(),
                })
            }
            Scorer::Server(s) => {
                use std::io::Seek;
                let mut f = file;
                f.rewind().map_err(|e| Error::io(path, e))?;
                s.score(f, name)
            }
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Scorer::Local(c) => format!("model {}", c.name()),
            Scorer::Server(s) => format!("server {}", s.url),
        }
    }
}

/// A path that opens the very file `file` is: `/proc/self/fd/N` where the kernel offers it,
/// else `path` itself.
fn open_file_path(file: &std::fs::File, path: &Path) -> std::path::PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let p = std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if p.exists() {
            return p;
        }
    }
    let _ = file;
    path.to_path_buf()
}

/// A blocking client of the server's `POST /v1/identify`.
#[derive(Debug, Clone)]
pub struct ServerClient {
    url: String,
    agent: ureq::Agent,
    /// Submission column order: given, or fetched once from `GET /v1/species` (shared by the
    /// clones of every worker).
    columns: Arc<Mutex<Option<Arc<Vec<String>>>>>,
}

impl ServerClient {
    /// A client of the server at `url` (`http://host:port`). `columns`: the species codes in
    /// submission column order (a `taxonomy.csv`'s order); without it the server's own class
    /// order (`GET /v1/species`) is used.
    pub fn new(url: &str, columns: Option<Vec<String>>, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build();
        Self {
            url: url.trim_end_matches('/').to_string(),
            agent: config.into(),
            columns: Arc::new(Mutex::new(columns.map(Arc::new))),
        }
    }

    /// The column order, fetched from the server the first time.
    fn columns(&self) -> Result<Arc<Vec<String>>> {
        let mut guard = self
            .columns
            .lock()
            .map_err(|_| Error::Worker("a worker panicked holding the species list".into()))?;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let server = |message: String| Error::Server {
            url: self.url.clone(),
            message,
        };
        let mut resp = self
            .agent
            .get(format!("{}/v1/species", self.url))
            .call()
            .map_err(|e| server(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| server(format!("reading the answer: {e}")))?;
        if status == 404 {
            return Err(Error::ServerResponse {
                url: self.url.clone(),
                message: "no GET /v1/species: pass the taxonomy for the column order".into(),
            });
        }
        if !(200..300).contains(&status) {
            return Err(server(format!("GET /v1/species: HTTP {status}")));
        }
        let list: SpeciesList = serde_json::from_str(&body).map_err(|e| Error::ServerResponse {
            url: self.url.clone(),
            message: format!("GET /v1/species: {e}"),
        })?;
        let c = Arc::new(list.species.into_iter().map(|s| s.code).collect::<Vec<_>>());
        *guard = Some(c.clone());
        Ok(c)
    }

    /// The column order from a `taxonomy.csv`.
    pub fn columns_from_taxonomy(path: &Path) -> Result<Vec<String>> {
        let t = silencio_data::Taxonomy::from_csv(path)?;
        Ok(t.species()
            .iter()
            .map(|s| s.primary_label.clone())
            .collect())
    }

    fn score(&self, body: impl ureq::AsSendBody, name: &str) -> Result<Scores> {
        let server = |message: String| Error::Server {
            url: self.url.clone(),
            message,
        };
        let content_type = silencio_api::audio_content_type(name);
        let columns = self.columns()?;
        // Every species with its score: a submission row needs them all.
        let query = IdentifyQuery {
            top_k: Some(columns.len()),
            min_score: Some(0.0),
            ..IdentifyQuery::default()
        };
        let mut resp = self
            .agent
            .post(format!("{}/v1/identify", self.url))
            .query_pairs(query.pairs())
            .header("Content-Type", content_type)
            .send(body)
            .map_err(|e| server(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| server(format!("reading the answer: {e}")))?;
        if !(200..300).contains(&status) {
            let parsed: Option<ErrorBody> = serde_json::from_str(&body).ok();
            // A refused key is this consumer's misconfiguration: stop, quarantine nothing.
            if status == 401 || status == 403 {
                return Err(Error::ServerResponse {
                    url: self.url.clone(),
                    message: format!("HTTP {status}: {body}"),
                });
            }
            // Other 4xx: this file is bad (408 timeout and 429 busy are the server's state).
            if (400..500).contains(&status) && status != 408 && status != 429 {
                return Err(match parsed {
                    Some(b) => Error::Rejected {
                        error_type: b.error_type,
                        message: b.error,
                    },
                    None => Error::Rejected {
                        error_type: format!("http_{status}"),
                        message: body.chars().take(300).collect(),
                    },
                });
            }
            return Err(server(format!(
                "HTTP {status}: {}",
                parsed.map_or_else(|| body.chars().take(300).collect(), |b| b.error)
            )));
        }
        let r: IdentifyResponse =
            serde_json::from_str(&body).map_err(|e| Error::ServerResponse {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
        self.to_scores(r, columns)
    }

    fn to_scores(&self, r: IdentifyResponse, columns: Arc<Vec<String>>) -> Result<Scores> {
        let bad = |message: String| Error::ServerResponse {
            url: self.url.clone(),
            message,
        };
        let index: std::collections::HashMap<&str, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let mut rows = Vec::with_capacity(r.windows.len());
        for (i, w) in r.windows.iter().enumerate() {
            let mut row = vec![f32::NAN; columns.len()];
            for s in &w.species {
                if let Some(&j) = index.get(s.code.as_str()) {
                    row[j] = s.score;
                }
            }
            if let Some(j) = row.iter().position(|v| v.is_nan()) {
                return Err(bad(format!(
                    "window {i} has no score for species {}",
                    columns[j]
                )));
            }
            rows.push(row);
        }
        Ok(Scores {
            model_version: r.model_version,
            species: columns,
            audio_s: r.windows.last().map_or(0.0, |w| w.end_s),
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `POST /v1/identify` answer of `model`: one 5 s window per entry, its species scores.
    fn answer(model: &str, windows: &[&[(&str, f32)]]) -> IdentifyResponse {
        let windows = windows
            .iter()
            .enumerate()
            .map(|(i, species)| silencio_api::WindowResult {
                start_s: i as f64 * 5.0,
                end_s: (i + 1) as f64 * 5.0,
                species: species
                    .iter()
                    .map(|&(code, score)| silencio_api::SpeciesScore {
                        code: code.into(),
                        scientific_name: format!("S {code}"),
                        common_name: format!("C {code}"),
                        class_name: "Aves".into(),
                        score,
                    })
                    .collect(),
            })
            .collect();
        IdentifyResponse {
            request_id: "x".into(),
            model_version: model.into(),
            windows,
            timing_ms: silencio_api::Timing::default(),
            location: None,
        }
    }

    #[test]
    fn server_answers_become_rows_in_column_order() {
        let c = ServerClient::new(
            "http://127.0.0.1:1/",
            Some(vec!["b".into(), "a".into()]),
            Duration::from_secs(1),
        );
        // As the server sends it, read back as the client reads it.
        let body = serde_json::to_string(&answer(
            "m@2",
            &[&[("a", 0.9), ("b", 0.1)], &[("b", 0.7), ("a", 0.2)]],
        ))
        .unwrap();
        let r: IdentifyResponse = serde_json::from_str(&body).unwrap();
        let s = c.to_scores(r, c.columns().unwrap()).unwrap();
        assert_eq!(s.model_version, "m@2");
        assert_eq!(s.rows, vec![vec![0.1, 0.9], vec![0.7, 0.2]]);
        assert_eq!(s.audio_s, 10.0);

        // A window missing a species is an error, not a silent zero.
        let r = answer("m", &[&[("a", 0.9)]]);
        assert_eq!(
            c.to_scores(r, c.columns().unwrap()).unwrap_err().kind(),
            "server_response"
        );
    }

    #[test]
    fn an_unreachable_server_is_a_transient_error() {
        // Port 1 on loopback: nothing listens there.
        let c = ServerClient::new("http://127.0.0.1:1", None, Duration::from_secs(2));
        let e = c.score(vec![1, 2, 3], "a.ogg").unwrap_err();
        assert_eq!(e.kind(), "server");
        assert!(!e.is_bad_input());
    }
}
