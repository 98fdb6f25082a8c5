//! The answered requests that feedback may refer to, kept across restarts: a guide who sends
//! feedback on an identification made before the server restarted (a deploy, a crash) must
//! not get 404.
//!
//! Layout: `<data-dir>/recent/requests.jsonl`, JSON Lines of two kinds: a model line
//! (`{"model": "name@v", "species": [...]}`, once per model version in the file) and a request
//! line (`{"id": ..., "model": ..., "windows": n}`). Appends are not fsync'd: a process crash
//! loses nothing (the page cache keeps the bytes), a power cut at most the last requests, and
//! feedback on those is then refused as unknown, which is what it is. When the file holds twice
//! the capacity, it is rewritten with the newest `capacity` requests (a temporary file renamed
//! into place), so it stays bounded. A torn last line (a crash mid-write) is dropped at start.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use silencio_infer::Species;

use crate::{Error, Result};

/// File name of the log inside `<data-dir>/recent`.
pub const LOG_FILE: &str = "requests.jsonl";

/// What feedback needs to know about an answered request.
#[derive(Debug, Clone)]
pub struct RecentRequest {
    /// `name@version` of the model that answered.
    pub model_version: String,
    /// Windows in the answer.
    pub windows: usize,
    /// The species of the model that answered.
    pub species: Arc<Vec<Species>>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Model {
        model: String,
        species: Vec<Species>,
    },
    Request {
        id: String,
        model: String,
        windows: usize,
    },
}

/// The newest `capacity` answered requests, in memory and on disk.
#[derive(Debug)]
pub struct RecentRequests {
    path: PathBuf,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: HashMap<String, RecentRequest>,
    order: VecDeque<String>,
    file: File,
    /// Request lines in the file.
    lines: usize,
    /// Model versions whose model line is in the file.
    written: HashSet<String>,
}

impl RecentRequests {
    /// Opens (or creates) the log in `dir` and loads its newest `capacity` requests.
    pub fn open(dir: &Path, capacity: usize) -> Result<Self> {
        let capacity = capacity.max(1);
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let path = dir.join(LOG_FILE);
        let (models, requests) = read_log(&path)?;
        let mut map = HashMap::new();
        let mut order = VecDeque::new();
        let skip = requests.len().saturating_sub(capacity);
        for (id, model, windows) in requests.into_iter().skip(skip) {
            let Some(species) = models.get(&model) else {
                return Err(corrupt(
                    &path,
                    format!("request {id} names unknown model {model}"),
                ));
            };
            let r = RecentRequest {
                model_version: model,
                windows,
                species: species.clone(),
            };
            if map.insert(id.clone(), r).is_none() {
                order.push_back(id);
            }
        }
        let (file, written) = rewrite(&path, &map, &order)?;
        Ok(Self {
            path,
            capacity,
            inner: Mutex::new(Inner {
                lines: order.len(),
                map,
                order,
                file,
                written,
            }),
        })
    }

    /// Remembers an answered request (the oldest is forgotten beyond the capacity). A failed
    /// write is logged, not returned: the answer is already computed, and feedback on it is
    /// the only thing at stake.
    pub fn remember(&self, request_id: &str, r: RecentRequest) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *g;
        while inner.order.len() >= self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
        let mut text = String::new();
        push_lines(&mut text, &mut inner.written, request_id, &r);
        inner.order.push_back(request_id.to_string());
        inner.map.insert(request_id.to_string(), r);
        inner.lines += 1;
        let written = if inner.lines > 2 * self.capacity {
            rewrite(&self.path, &inner.map, &inner.order).map(|(file, written)| {
                inner.file = file;
                inner.written = written;
                inner.lines = inner.order.len();
            })
        } else {
            inner
                .file
                .write_all(text.as_bytes())
                .map_err(|e| Error::io(format!("append to {}", self.path.display()), e))
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "recent request not saved: feedback on it after a restart will be refused");
        }
    }

    /// A recent request by id.
    pub fn get(&self, request_id: &str) -> Option<RecentRequest> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(request_id)
            .cloned()
    }
}

/// Appends the lines of request `id` to `text`: its model's line first unless `written`
/// already holds that version (then recorded there).
fn push_lines(text: &mut String, written: &mut HashSet<String>, id: &str, r: &RecentRequest) {
    if written.insert(r.model_version.clone()) {
        push_line(
            text,
            &Line::Model {
                model: r.model_version.clone(),
                species: r.species.to_vec(),
            },
        );
    }
    push_line(
        text,
        &Line::Request {
            id: id.to_string(),
            model: r.model_version.clone(),
            windows: r.windows,
        },
    );
}

fn push_line(text: &mut String, l: &Line) {
    // Serialising plain strings and numbers cannot fail.
    text.push_str(&serde_json::to_string(l).unwrap_or_default());
    text.push('\n');
}

fn corrupt(path: &Path, message: String) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        line: 0,
        message,
    }
}

type Loaded = (
    HashMap<String, Arc<Vec<Species>>>,
    Vec<(String, String, usize)>,
);

/// The log's model lines and request lines; a torn last line is dropped, any other bad line
/// is an error (never skipped silently).
fn read_log(path: &Path) -> Result<Loaded> {
    let mut models = HashMap::new();
    let mut requests = Vec::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((models, requests)),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    let mut lines = BufReader::new(file).lines().enumerate().peekable();
    while let Some((n, l)) = lines.next() {
        let l = l.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        match serde_json::from_str::<Line>(&l) {
            Ok(Line::Model { model, species }) => {
                models.insert(model, Arc::new(species));
            }
            Ok(Line::Request { id, model, windows }) => requests.push((id, model, windows)),
            Err(_) if lines.peek().is_none() => {
                tracing::warn!(path = %path.display(), "dropping a torn last line");
            }
            Err(e) => {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    line: n + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok((models, requests))
}

/// Writes `order`'s requests (with their model lines) to a temporary file, renames it over
/// the log, and returns the log open for appending.
fn rewrite(
    path: &Path,
    map: &HashMap<String, RecentRequest>,
    order: &VecDeque<String>,
) -> Result<(File, HashSet<String>)> {
    let mut text = String::new();
    let mut written = HashSet::new();
    for id in order {
        if let Some(r) = map.get(id) {
            push_lines(&mut text, &mut written, id, r);
        }
    }
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    silencio_common::write_atomic(path, text.as_bytes()).map_err(|e| io("replace", e))?;
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| io("open", e))?;
    Ok((file, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(model: &str, windows: usize) -> RecentRequest {
        RecentRequest {
            model_version: model.into(),
            windows,
            species: Arc::new(vec![Species {
                code: "grekis".into(),
                scientific_name: "Pitangus sulphuratus".into(),
                common_name: "Great Kiskadee".into(),
                class_name: "Aves".into(),
            }]),
        }
    }

    #[test]
    fn requests_survive_a_reopen_and_the_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let r = RecentRequests::open(dir.path(), 3).unwrap();
            for i in 0..10 {
                r.remember(
                    &format!("id{i}"),
                    req(if i % 2 == 0 { "a@1" } else { "b@2" }, i),
                );
            }
            assert!(r.get("id6").is_none());
            assert_eq!(r.get("id9").unwrap().windows, 9);
        }
        let lines = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert!(lines.lines().count() <= 2 * 3 + 2, "{lines}");
        // A torn last line (a crash mid-append) is dropped.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all(b"{\"id\":\"id10\",\"mod").unwrap();
        let r = RecentRequests::open(dir.path(), 3).unwrap();
        assert!(r.get("id6").is_none());
        for i in 7..10 {
            let got = r.get(&format!("id{i}")).unwrap();
            assert_eq!(got.windows, i);
            assert_eq!(got.model_version, if i % 2 == 0 { "a@1" } else { "b@2" });
            assert_eq!(got.species[0].code, "grekis");
        }
        // A bad line that is not the last is an error, not skipped.
        std::fs::write(
            dir.path().join(LOG_FILE),
            "garbage\n{\"id\":\"x\",\"model\":\"a@1\",\"windows\":1}\n",
        )
        .unwrap();
        assert!(RecentRequests::open(dir.path(), 3).is_err());
    }
}
