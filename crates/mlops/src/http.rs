//! One blocking HTTP client for MLflow and Ray: JSON in, JSON out, server errors turned into
//! typed errors.

use std::time::Duration;

use serde_json::Value;
use ureq::Agent;

use crate::{Error, Result};

/// Whose error format to expect.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavor {
    /// `{"error_code": …, "message": …}`.
    Mlflow,
    /// A plain-text body (often a Python traceback).
    Ray,
}

/// A base URL and an agent.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    agent: Agent,
    base: String,
    flavor: Flavor,
}

/// Largest body read back (Ray logs of a long job can be large).
const MAX_BODY: u64 = 512 << 20;

impl Http {
    pub(crate) fn new(base: &str, flavor: Flavor) -> Self {
        let agent: Agent = Agent::config_builder()
            // Non-2xx answers carry MLflow's error JSON: read them rather than fail early.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .build()
            .into();
        Http {
            agent,
            base: base.trim_end_matches('/').to_string(),
            flavor,
        }
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = self.url(path);
        let mut attempt = 0;
        loop {
            let mut req = self.agent.get(&url);
            for (k, v) in query {
                req = req.query(*k, *v);
            }
            let res = req.call();
            // GETs are safe to repeat: ride out a server that is restarting.
            match res {
                Err(_) if attempt < 2 => {}
                Ok(ref r) if matches!(r.status().as_u16(), 502..=504) && attempt < 2 => {}
                _ => {
                    return self
                        .finish("GET", path, &url, res)
                        .and_then(|t| parse(path, &t));
                }
            }
            attempt += 1;
            std::thread::sleep(Duration::from_millis(500 << attempt));
        }
    }

    pub(crate) fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = self.url(path);
        let res = self.agent.post(&url).send_json(body);
        self.finish("POST", path, &url, res)
            .and_then(|t| parse(path, &t))
    }

    pub(crate) fn post_empty(&self, path: &str) -> Result<Value> {
        let url = self.url(path);
        let res = self.agent.post(&url).send_empty();
        self.finish("POST", path, &url, res)
            .and_then(|t| parse(path, &t))
    }

    pub(crate) fn delete_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = self.url(path);
        // MLflow reads DELETE parameters from a JSON body, not the query string.
        let res = self
            .agent
            .delete(&url)
            .force_send_body()
            .content_type("application/json")
            .send(body.to_string());
        self.finish("DELETE", path, &url, res)
            .and_then(|t| parse(path, &t))
    }

    pub(crate) fn put_file(&self, path: &str, file: &std::path::Path) -> Result<()> {
        let url = self.url(path);
        let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        let res = self
            .agent
            .put(&url)
            .config()
            // Large artifacts: no response deadline while the body is still going up.
            .timeout_recv_response(None)
            .build()
            .content_type("application/octet-stream")
            .send(f);
        self.finish("PUT", path, &url, res).map(|_| ())
    }

    fn finish(
        &self,
        method: &'static str,
        endpoint: &str,
        url: &str,
        res: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String> {
        let mut resp = res.map_err(|e| Error::Transport {
            method,
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| Error::Transport {
                method,
                url: url.to_string(),
                message: format!("reading the body: {e}"),
            })?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        Err(match self.flavor {
            Flavor::Mlflow => {
                let parsed: Option<Value> = serde_json::from_str(&text).ok();
                let field = |k: &str| {
                    parsed
                        .as_ref()
                        .and_then(|v| v.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                Error::Mlflow {
                    endpoint: endpoint.to_string(),
                    status,
                    error_code: field("error_code").unwrap_or_else(|| format!("HTTP_{status}")),
                    message: field("message").unwrap_or_else(|| text.trim().to_string()),
                }
            }
            Flavor::Ray => Error::Ray {
                endpoint: endpoint.to_string(),
                status,
                message: text.trim().to_string(),
            },
        })
    }
}

fn parse(endpoint: &str, text: &str) -> Result<Value> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| Error::Protocol {
        endpoint: endpoint.to_string(),
        message: format!(
            "not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        ),
    })
}

/// A string field of a JSON object, or a protocol error naming it.
pub(crate) fn str_field(endpoint: &str, v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Protocol {
            endpoint: endpoint.to_string(),
            message: format!("no string field {key:?} in {}", abbreviate(v)),
        })
}

pub(crate) fn abbreviate(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}
