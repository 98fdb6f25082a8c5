//! `--metrics-addr`: the consumer's Prometheus metrics on a plain HTTP port, for a consumer
//! run beside the server (whose own `/metrics` holds the server's). Without it the `metrics`
//! calls of this crate cost nothing (no recorder is installed).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::{Error, Result};

/// Installs a Prometheus recorder for this process and answers every HTTP request on `addr`
/// with its text exposition, from a background thread. Returns the bound address (port 0
/// picks a free one).
pub fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::InvalidOptions(format!("binding {addr} for metrics: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::InvalidOptions(format!("metrics listener: {e}")))?;
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Error::InvalidOptions(format!("installing the metrics recorder: {e}")))?;
    std::thread::Builder::new()
        .name("stream-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                // Any request gets the metrics; the request itself is read and ignored.
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let body = handle.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s
                    .write_all(head.as_bytes())
                    .and_then(|()| s.write_all(body.as_bytes()));
            }
        })
        .map_err(|e| Error::Worker(e.to_string()))?;
    Ok(bound)
}
