//! Facts worth tagging a run with: the code's git state and the machine.

use std::path::Path;
use std::process::Command;

/// The git state of a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitInfo {
    /// Full commit hash of HEAD.
    pub commit: String,
    /// Branch name (`None` on a detached HEAD).
    pub branch: Option<String>,
    /// Uncommitted changes to tracked files.
    pub dirty: bool,
}

impl GitInfo {
    /// As run tags: `mlflow.source.git.commit`, `mlflow.source.git.branch`,
    /// `silencio.git.dirty`.
    pub fn tags(&self) -> Vec<(String, String)> {
        let mut t = vec![(
            crate::tracking::TAG_GIT_COMMIT.to_string(),
            self.commit.clone(),
        )];
        if let Some(b) = &self.branch {
            t.push((crate::tracking::TAG_GIT_BRANCH.to_string(), b.clone()));
        }
        t.push(("silencio.git.dirty".to_string(), self.dirty.to_string()));
        t
    }
}

fn git(repo_dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo_dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The git state of the checkout containing `repo_dir`; `None` when it is not one or `git`
/// is missing.
pub fn git_info(repo_dir: &Path) -> Option<GitInfo> {
    let commit = git(repo_dir, &["rev-parse", "HEAD"])?;
    let branch =
        git(repo_dir, &["symbolic-ref", "--short", "-q", "HEAD"]).filter(|b| !b.is_empty());
    // Untracked files do not make a build differ from its commit; edits to tracked ones do.
    let dirty = git(repo_dir, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    Some(GitInfo {
        commit,
        branch,
        dirty,
    })
}

/// The machine a run ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// Host name.
    pub hostname: String,
    /// `linux`, `macos`, … and the architecture.
    pub os: String,
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// Total memory in bytes (from `/proc/meminfo`; `None` elsewhere).
    pub total_memory_bytes: Option<u64>,
    /// `rustc --version`, when a rustc is on the PATH.
    pub rustc: Option<String>,
}

impl SystemInfo {
    /// As run tags under `silencio.system.`.
    pub fn tags(&self) -> Vec<(String, String)> {
        let mut t = vec![
            (
                "silencio.system.hostname".to_string(),
                self.hostname.clone(),
            ),
            ("silencio.system.os".to_string(), self.os.clone()),
            ("silencio.system.cpus".to_string(), self.cpus.to_string()),
        ];
        if let Some(m) = self.total_memory_bytes {
            t.push(("silencio.system.memory_bytes".to_string(), m.to_string()));
        }
        if let Some(r) = &self.rustc {
            t.push(("silencio.system.rustc".to_string(), r.clone()));
        }
        t
    }
}

/// Facts about this machine.
pub fn system_info() -> SystemInfo {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            Command::new("hostname")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        })
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let total_memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_meminfo_total(&m));
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    SystemInfo {
        hostname,
        os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        total_memory_bytes,
        rustc,
    }
}

fn parse_meminfo_total(m: &str) -> Option<u64> {
    let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(parse_meminfo_total("nothing"), None);
    }

    #[test]
    fn this_checkout() {
        let s = system_info();
        assert!(s.cpus >= 1);
        // The crate lives in a git checkout when tests run from the repository.
        if let Some(g) = git_info(Path::new(env!("CARGO_MANIFEST_DIR"))) {
            assert_eq!(g.commit.len(), 40);
        }
        assert!(git_info(Path::new("/")).is_none() || Path::new("/.git").exists());
    }
}
