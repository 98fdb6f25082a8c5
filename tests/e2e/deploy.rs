//! The observability files in deploy/: the alert rules under `promtool test rules`, the rules
//! and the Prometheus config under `promtool check`, and the real `prometheus` binary scraping a
//! real `silencio serve` with those rules loaded.
//!
//! Part of the `e2e` binary (tests/e2e/serve.rs) rather than a binary of its own: each test
//! binary links all of Burn. Both tools come from Debian's `prometheus` package:
//! `$SILENCIO_PROMTOOL` (default `promtool`) and `$SILENCIO_PROMETHEUS` (default: `prometheus`
//! beside that promtool); `SILENCIO_SKIP_PROMTOOL=1` skips these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use silencio_server::metrics as m;

use super::{common, wait_ready};

/// The alerts deploy/prometheus/alerts.yml must define: the issue asks for latency, errors,
/// saturation and drift; a dead target would silence all of them.
const ALERTS: [&str; 6] = [
    "SilencioTargetDown",
    "SilencioIdentifyLatencyHigh",
    "SilencioHighErrorRate",
    "SilencioOverloaded",
    "SilencioQueueBacklog",
    "SilencioTopScoreDrift",
];

/// How long any wait on Prometheus or the server may take.
const WAIT: Duration = Duration::from_secs(60);

fn prometheus_dir() -> PathBuf {
    common::root().join("deploy/prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn skipped() -> bool {
    let skip = std::env::var_os("SILENCIO_SKIP_PROMTOOL").is_some();
    if skip {
        eprintln!("SILENCIO_SKIP_PROMTOOL is set: Prometheus checks skipped");
    }
    skip
}

/// `$SILENCIO_PROMTOOL`, else `promtool` on the PATH; `None` when skipped.
fn promtool() -> Option<PathBuf> {
    if skipped() {
        return None;
    }
    Some(env_path("SILENCIO_PROMTOOL").unwrap_or_else(|| "promtool".into()))
}

/// A path from the environment; empty counts as unset (scripts/test.sh exports what
/// `command -v` found, which is nothing when the tool is missing).
fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$SILENCIO_PROMETHEUS`, else the `prometheus` beside `$SILENCIO_PROMTOOL` (one Debian
/// package installs both), else `prometheus` on the PATH; `None` when skipped.
fn prometheus() -> Option<PathBuf> {
    if skipped() {
        return None;
    }
    if let Some(p) = env_path("SILENCIO_PROMETHEUS") {
        return Some(p);
    }
    let beside = env_path("SILENCIO_PROMTOOL")
        .and_then(|t| t.parent().map(|d| d.join("prometheus")))
        .filter(|p| p.is_file());
    Some(beside.unwrap_or_else(|| "prometheus".into()))
}

fn how_to_install(bin: &Path, e: std::io::Error) -> String {
    format!(
        "cannot run {} ({e}): install Debian's `prometheus` package (apt-get install prometheus), \
         point $SILENCIO_PROMTOOL / $SILENCIO_PROMETHEUS at its binaries, or set \
         SILENCIO_SKIP_PROMTOOL=1",
        bin.display()
    )
}

/// Runs promtool; (success, stdout and stderr).
fn run_promtool(bin: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}", how_to_install(bin, e)));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The names after `- alert:` in a rules file.
fn alert_names(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// `rules` with alert `name`'s expression (one line or a block) replaced by one that never
/// returns anything.
fn never_firing(rules: &str, name: &str) -> String {
    let lines: Vec<&str> = rules.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == format!("- alert: {name}"))
        .unwrap_or_else(|| panic!("no alert {name}"));
    let expr = at
        + lines[at..]
            .iter()
            .position(|l| l.trim_start().starts_with("expr:"))
            .unwrap_or_else(|| panic!("alert {name} has no expr"));
    let indent = lines[expr].len() - lines[expr].trim_start().len();
    // A block scalar's lines are indented deeper than its key.
    let end = expr
        + 1
        + lines[expr + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .count();
    let mut out: Vec<String> = lines[..expr].iter().map(|l| l.to_string()).collect();
    out.push(format!("{}expr: vector(1) == 0", " ".repeat(indent)));
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    out.join("\n") + "\n"
}

/// Per test of a promtool test file: (test name, alert name, expects no alert).
fn alert_cases(tests: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut test = String::new();
    let lines: Vec<&str> = tests
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(n) = l.strip_prefix("  - name:") {
            test = n.trim().trim_matches('"').to_string();
        } else if let Some(a) = l.trim().strip_prefix("alertname:") {
            let next = lines.get(i + 1).map_or("", |n| n.trim());
            assert!(
                next.starts_with("exp_alerts:"),
                "alertname {a} in {test:?} is not followed by exp_alerts"
            );
            out.push((test.clone(), a.trim().to_string(), next == "exp_alerts: []"));
        }
    }
    out
}

#[test]
fn promtool_checks_the_config_and_unit_tests_every_alert() {
    let Some(bin) = promtool() else { return };
    let dir = prometheus_dir();
    let config = dir.join("prometheus.yml");
    let rules = dir.join("alerts.yml");
    let tests = dir.join("alerts_test.yml");

    // `check config` also checks the rule files it names, so it proves rule_files resolves.
    let (ok, text) = run_promtool(&bin, &["check", "config", config.to_str().unwrap()]);
    assert!(
        ok && text.contains("SUCCESS: 1 rule files found") && text.contains("alerts.yml"),
        "promtool check config failed or loaded no rules:\n{text}"
    );
    let (ok, text) = run_promtool(&bin, &["check", "rules", rules.to_str().unwrap()]);
    assert!(
        ok && text.contains("SUCCESS"),
        "promtool check rules:\n{text}"
    );
    let (ok, text) = run_promtool(&bin, &["test", "rules", tests.to_str().unwrap()]);
    assert!(
        ok && text.contains("SUCCESS"),
        "promtool test rules:\n{text}"
    );

    let rules_text = read(&rules);
    let names = alert_names(&rules_text);
    let expected: BTreeSet<String> = ALERTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, expected, "the alerts in {}", rules.display());

    // The rules query what the server exports: a misspelt name would match no series and
    // never fire, and promtool cannot tell (the synthetic series could carry the same typo).
    let exported: Vec<&str> = m::NAMES.to_vec();
    let mut queried = BTreeSet::new();
    for line in rules_text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        for tok in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if !tok.starts_with("silencio_") {
                continue; // recording rules (`job:...`), labels, functions
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| tok.strip_suffix(s).filter(|b| exported.contains(b)))
                .unwrap_or(tok);
            assert!(
                exported.contains(&base),
                "alerts.yml queries {tok}, which the server does not export"
            );
            queried.insert(base.to_string());
        }
    }
    for needed in [
        m::HTTP_DURATION,
        m::HTTP_REQUESTS,
        m::REJECTED,
        m::QUEUE_DEPTH,
        m::TOP_SCORE,
    ] {
        assert!(queried.contains(needed), "no rule reads {needed}");
    }

    // Every alert has a test where it fires and a "healthy: ..." test where it stays quiet.
    let cases = alert_cases(&read(&tests));
    for alert in ALERTS {
        assert!(
            cases.iter().any(|(_, a, quiet)| a == alert && !quiet),
            "no test expects {alert} to fire"
        );
        assert!(
            cases
                .iter()
                .any(|(t, a, quiet)| a == alert && *quiet && t.starts_with("healthy:")),
            "no \"healthy: ...\" test expects {alert} to stay quiet"
        );
    }

    // And those firing tests bite: an alert that can never fire fails them.
    std::thread::scope(|s| {
        let handles: Vec<_> = ALERTS
            .iter()
            .map(|alert| {
                let (bin, rules_text, tests) = (&bin, &rules_text, &tests);
                s.spawn(move || {
                    let tmp = tempfile::tempdir().unwrap();
                    std::fs::write(
                        tmp.path().join("alerts.yml"),
                        never_firing(rules_text, alert),
                    )
                    .unwrap();
                    let copy = tmp.path().join("alerts_test.yml");
                    std::fs::copy(tests, &copy).unwrap();
                    let (ok, text) = run_promtool(bin, &["test", "rules", copy.to_str().unwrap()]);
                    assert!(
                        !ok && text.contains(&format!("alertname: {alert}")),
                        "the tests still pass when {alert} never fires:\n{text}"
                    );
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

/// A child process killed when the test ends, passing or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `text` with every `from` replaced, which must be there.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in:\n{text}");
    text.replace(from, to)
}

/// The `data` of a Prometheus API answer, or `None` while it is not ready or not "success".
async fn api(c: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> Option<Value> {
    let r = c.get(url).query(query).send().await.ok()?;
    let j: Value = r.json().await.ok()?;
    (j["status"] == "success").then(|| j["data"].clone())
}

/// Polls `check` until it returns `Some`, failing after [`WAIT`] with `what` and the log.
async fn poll<T, F, Fut>(what: &str, log: &Path, prom: &mut KillOnDrop, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if let Some(status) = prom.0.try_wait().unwrap() {
            panic!(
                "prometheus exited ({status}) while waiting for {what}; its log:\n{}",
                read(log)
            );
        }
        assert!(
            t.elapsed() < WAIT,
            "no {what} after {WAIT:?}; prometheus's log:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_real_server_with_the_alert_rules_loaded() {
    let Some(bin) = prometheus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("b"), "e2e-prometheus", "1");
    let (serve, addr, _, _lines) = common::start_serve(
        Command::new(env!("CARGO_BIN_EXE_silencio"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--replicas",
                "1",
                "--model",
            ])
            .arg(&bundle)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .env("SILENCIO_API_KEY", "test-key")
            .env("RUST_LOG", "warn"),
    );
    let _serve = KillOnDrop(serve);
    let c = reqwest::Client::new();
    wait_ready(&c, &format!("http://{addr}/readyz")).await;

    // The shipped config and rules, pointed at this server and sped up to a 1 s cycle (the
    // drift group's 1 m too, so that every group has run within the wait).
    let dir = tmp.path().join("prometheus");
    std::fs::create_dir(&dir).unwrap();
    let config = read(&prometheus_dir().join("prometheus.yml"));
    let config = replaced(&config, "127.0.0.1:8080", &addr);
    let config = replaced(&config, "scrape_interval: 5s", "scrape_interval: 1s");
    let config = replaced(
        &config,
        "evaluation_interval: 5s",
        "evaluation_interval: 1s",
    );
    let config = replaced(&config, "scrape_timeout: 4s", "scrape_timeout: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let rules = read(&prometheus_dir().join("alerts.yml"));
    let rules_path = dir.join("alerts.yml");
    std::fs::write(
        &rules_path,
        replaced(&rules, "interval: 1m", "interval: 1s"),
    )
    .unwrap();

    let port = free_port();
    let log = tmp.path().join("prometheus.log");
    let log_file = std::fs::File::create(&log).unwrap();
    // Started elsewhere than the config's directory: rule_files must resolve from the config.
    let mut prom = KillOnDrop(
        Command::new(&bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(tmp.path())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", how_to_install(&bin, e))),
    );
    let base = format!("http://127.0.0.1:{port}");
    poll("readiness", &log, &mut prom, || {
        let (c, url) = (c.clone(), format!("{base}/-/ready"));
        async move { c.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;

    let r = c
        .post(format!("http://{addr}/v1/identify"))
        .header("content-type", "audio/wav")
        .body(common::clip_5s_wav())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // The one identification, counted by the server and read back through Prometheus.
    let query = format!("{base}/api/v1/query");
    let series = poll("identify counter of 1", &log, &mut prom, || {
        let (c, query) = (c.clone(), query.clone());
        async move {
            let q = r#"silencio_http_requests_total{job="silencio", route="/v1/identify", status="200"}"#;
            let data = api(&c, &query, &[("query", q)]).await?;
            let result = data["result"].as_array()?.clone();
            (result.len() == 1 && result[0]["value"][1] == "1").then(|| result[0].clone())
        }
    })
    .await;
    assert_eq!(series["metric"]["instance"], addr.as_str(), "{series}");
    assert_eq!(series["metric"]["service"], "silencio-serve", "{series}");
    // Its one 5 s window reached the top-score histogram the drift alert reads.
    poll("top score count of 1", &log, &mut prom, || {
        let (c, query) = (c.clone(), query.clone());
        async move {
            let q = r#"silencio_top_score_count{job="silencio"}"#;
            let data = api(&c, &query, &[("query", q)]).await?;
            (data["result"][0]["value"][1] == "1").then_some(())
        }
    })
    .await;
    // A recording rule over the real series: its matchers fit the server's labels.
    poll("recorded API request rate", &log, &mut prom, || {
        let (c, query) = (c.clone(), query.clone());
        async move {
            let q = r#"job:silencio_http_requests:rate5m{job="silencio"}"#;
            let data = api(&c, &query, &[("query", q)]).await?;
            (data["result"].as_array()?.len() == 1).then_some(())
        }
    })
    .await;

    // Every rule loaded from the shipped file and evaluated without error; with the server up
    // and one request served, no alert is pending or firing.
    let rules_url = format!("{base}/api/v1/rules");
    let groups = poll("every rule evaluated", &log, &mut prom, || {
        let (c, url) = (c.clone(), rules_url.clone());
        async move {
            let data = api(&c, &url, &[]).await?;
            let groups = data["groups"].as_array()?.clone();
            let all_ran = !groups.is_empty()
                && groups
                    .iter()
                    .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                    .all(|r| r["health"] != "unknown");
            all_ran.then_some(groups)
        }
    })
    .await;
    let mut alerts = BTreeSet::new();
    for g in &groups {
        assert_eq!(g["file"], rules_path.to_str().unwrap(), "{g}");
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(
                r["health"], "ok",
                "rule {} in {}: {r}",
                r["name"], g["name"]
            );
            if r["type"] == "alerting" {
                assert_eq!(r["state"], "inactive", "{r}");
                alerts.insert(r["name"].as_str().unwrap().to_string());
            }
        }
    }
    let expected: BTreeSet<String> = ALERTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(alerts, expected);
}

/// The value after `key:` on the first line that has it (quotes stripped).
fn yaml_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}: in\n{text}"))
        .trim()
        .trim_matches('"')
}

#[test]
fn compose_and_grafana_provisioning_point_at_the_shipped_files() {
    // Not run here (no container registry): what a moved or renamed file would break is
    // checked on the text.
    let deploy = common::root().join("deploy");
    let compose = read(&deploy.join("compose.yaml"));
    let mut mounts = Vec::new();
    for l in compose.lines() {
        let Some(m) = l.trim().strip_prefix("- ./") else {
            continue;
        };
        let mut parts = m.split(':');
        let (from, to) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(
            deploy.join(from).exists(),
            "compose.yaml mounts ./{from}, which is not in deploy/"
        );
        mounts.push((from.to_string(), to.to_string()));
    }
    let target = |from: &str| {
        mounts
            .iter()
            .find(|(f, _)| f == from)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("compose.yaml does not mount ./{from}: {mounts:?}"))
    };
    // Prometheus reads its default config path inside the mounted directory.
    assert_eq!(target("prometheus"), "/etc/prometheus");
    assert!(compose.contains("--config.file=/etc/prometheus/prometheus.yml"));
    assert_eq!(target("grafana/provisioning"), "/etc/grafana/provisioning");
    assert!(
        compose.contains(r#"test: ["CMD", "/usr/local/bin/silencio", "healthcheck", "--url", "http://127.0.0.1:8080/readyz"]"#),
        "the service's health check"
    );
    assert!(compose.contains("- registry:/var/lib/silencio/registry"));
    assert_eq!(
        yaml_value(&compose, "SILENCIO_REGISTRY"),
        "/var/lib/silencio/registry"
    );

    // The dashboard lands in the folder Grafana's provider reads, and is the home page.
    let dashboard = target("grafana-dashboard.json");
    let provider = read(&deploy.join("grafana/provisioning/dashboards/silencio.yml"));
    let folder = yaml_value(&provider, "path");
    assert_eq!(
        Path::new(&dashboard).parent().unwrap(),
        Path::new(folder),
        "the dashboard is mounted outside the provider's folder"
    );
    assert_eq!(
        yaml_value(&compose, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"),
        dashboard
    );

    // The dashboard picks its data source through a variable of type prometheus with no
    // default of its own, so Grafana's default Prometheus data source is the one it uses.
    let dash: Value = serde_json::from_str(&read(&deploy.join("grafana-dashboard.json"))).unwrap();
    let var = &dash["templating"]["list"][0];
    assert_eq!(
        (&var["name"], &var["type"], &var["query"]),
        (
            &Value::from("datasource"),
            &Value::from("datasource"),
            &Value::from("prometheus")
        )
    );
    assert!(
        var["current"].as_object().is_some_and(|c| c.is_empty()),
        "{var}"
    );
    let source = read(&deploy.join("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(yaml_value(&source, "type"), "prometheus");
    assert_eq!(yaml_value(&source, "isDefault"), "true");
    // It is the Prometheus compose.yaml starts (host networking: the same address).
    let url = yaml_value(&source, "url");
    let listen = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("- --web.listen-address="))
        .unwrap();
    assert_eq!(url, format!("http://{listen}"));
}
