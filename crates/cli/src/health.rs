//! `silencio healthcheck`: GET a URL and exit 0 on a 2xx answer, 1 otherwise. The container
//! image's health check: the image holds no curl or shell. Docker reserves exit code 2, which
//! the CLI's other errors use, so this command sets its own code.
//!
//! Plain `http://` over `std::net`: the probe only needs the status line, and this crate depends
//! on no HTTP client itself (the library crates keep theirs private).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Flags of `silencio healthcheck`.
#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// URL to GET (`http://host[:port]/path`; no TLS).
    #[arg(
        long,
        env = "SILENCIO_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:8080/readyz"
    )]
    url: String,
    /// Deadline for connecting and reading the status line, in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout_s: f64,
}

/// Runs the check and prints one line: `healthy: …`, or `unhealthy: …` and exits 1.
pub fn healthcheck(a: &HealthcheckArgs) -> anyhow::Result<()> {
    let outcome = if a.timeout_s.is_finite() && a.timeout_s > 0.0 {
        status(&a.url, Duration::from_secs_f64(a.timeout_s))
    } else {
        Err("--timeout-s must be > 0".into())
    };
    let why = match outcome {
        Ok(code) if (200..300).contains(&code) => {
            println!("healthy: GET {} answered {code}", a.url);
            return Ok(());
        }
        Ok(code) => format!("answered {code}"),
        Err(e) => e,
    };
    println!("unhealthy: GET {}: {why}", a.url);
    // Not an error return: that exits 2, which Docker reserves.
    std::process::exit(1)
}

/// The HTTP status of `GET url`, within `timeout` from the first connect to the status line.
fn status(url: &str, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() {
        return Err("no host in the URL".into());
    }
    let mut stream = connect(authority, deadline)?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {timeout:?}"))
    };
    stream.set_write_timeout(Some(left()?)).ok();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: silencio-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    // Only the status line matters; stop reading once it is in.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        if head.len() > 8192 {
            return Err("no HTTP status line in the first 8 KiB".into());
        }
        stream.set_read_timeout(Some(left()?)).ok();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    parse_status_line(&head)
}

/// Connects to the first address of `authority` (`host[:port]`, port 80 by default) that
/// answers before `deadline`.
fn connect(authority: &str, deadline: Instant) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .or_else(|_| format!("{authority}:80").to_socket_addrs())
        .map_err(|e| format!("resolving {authority}: {e}"))?
        .collect();
    let mut last = format!("{authority} resolves to no address");
    for addr in addrs {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

/// The code of an `HTTP/1.x NNN reason` status line at the start of `head`.
fn parse_status_line(head: &[u8]) -> Result<u16, String> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => Ok(code),
        _ if head.is_empty() => Err("the connection closed without an answer".into()),
        _ => Err(format!("not an HTTP status line: {:?}", line.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server answering `answer` to the first connection; returns its base URL and
    /// the request it read.
    fn serve_once(answer: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 256];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).unwrap();
            String::from_utf8(req).unwrap()
        });
        (base, h)
    }

    #[test]
    fn a_2xx_is_healthy_and_the_path_and_host_are_sent() {
        let (base, h) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nready");
        let code = status(&format!("{base}/readyz?x=1"), Duration::from_secs(5)).unwrap();
        assert_eq!(code, 200);
        let req = h.join().unwrap();
        assert!(req.starts_with("GET /readyz?x=1 HTTP/1.1\r\n"), "{req}");
        let host = base.trim_start_matches("http://");
        assert!(req.contains(&format!("Host: {host}\r\n")), "{req}");
    }

    #[test]
    fn a_503_and_a_closed_port_are_unhealthy_with_a_reason() {
        let (base, h) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(status(&base, Duration::from_secs(5)), Ok(503));
        assert!(h.join().unwrap().starts_with("GET / HTTP/1.1"));

        // A port nothing listens on (bound, then released).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = status(
            &format!("http://127.0.0.1:{port}/readyz"),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.contains("connecting to 127.0.0.1"), "{e}");
    }

    #[test]
    fn a_silent_server_times_out_and_bad_urls_are_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/readyz", l.local_addr().unwrap());
        let t = Instant::now();
        let e = status(&url, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(
            e.contains("no answer within") || e.contains("reading the answer"),
            "{e}"
        );
        drop(l);

        assert!(
            status("https://127.0.0.1/", Duration::from_secs(1))
                .unwrap_err()
                .contains("only http://")
        );
        assert!(status("http:///x", Duration::from_secs(1)).is_err());
        assert_eq!(
            parse_status_line(b"SSH-2.0-OpenSSH\r\n"),
            Err("not an HTTP status line: \"SSH-2.0-OpenSSH\"".into())
        );
    }
}
