//! Running a server inside a memory limit, by whatever this machine offers, probed in order:
//! cgroup v2 with the memory controller, cgroup v1's memory hierarchy, `systemd-run --scope -p
//! MemoryMax=`, else nothing (and the report says so).
//!
//! The server is moved into the cgroup before it runs by a one-line shell wrapper that writes its
//! own pid to `cgroup.procs` and then `exec`s the server (same pid, so SIGTERM and the exit status
//! are the server's), which keeps `unsafe` `pre_exec` hooks out of the harness.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Serialize;

/// The mechanism found.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mechanism {
    /// A cgroup v2 hierarchy with the memory controller, mounted here.
    V2 {
        /// Mount point.
        root: PathBuf,
    },
    /// cgroup v1's memory hierarchy, mounted here.
    V1 {
        /// Mount point.
        root: PathBuf,
    },
    /// A transient systemd scope.
    SystemdRun,
    /// No way to limit memory here.
    None,
}

impl Mechanism {
    /// A short name for reports.
    pub fn describe(&self) -> String {
        match self {
            Mechanism::V2 { root } => format!("cgroup v2 ({})", root.display()),
            Mechanism::V1 { root } => format!("cgroup v1 memory ({})", root.display()),
            Mechanism::SystemdRun => "systemd-run --scope -p MemoryMax=".into(),
            Mechanism::None => "none (no cgroup memory controller or systemd-run usable)".into(),
        }
    }
}

fn mounts() -> Vec<(String, PathBuf, String)> {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[2].to_string(), PathBuf::from(f[1]), f[3].to_string()))
        })
        .collect()
}

fn try_dir(root: &Path, file: &str) -> bool {
    let probe = root.join(format!("pagegen-bench-probe-{}", std::process::id()));
    let ok = fs::create_dir(&probe).is_ok() && probe.join(file).exists();
    let _ = fs::remove_dir(&probe);
    ok
}

/// Finds the first mechanism that works here.
pub fn probe() -> Mechanism {
    let mounts = mounts();
    for (kind, root, _) in &mounts {
        if kind == "cgroup2" {
            let controllers =
                fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "memory") {
                // Children get the memory controller only if the root delegates it.
                let _ = fs::write(root.join("cgroup.subtree_control"), "+memory");
                if try_dir(root, "memory.max") {
                    return Mechanism::V2 { root: root.clone() };
                }
            }
        }
    }
    for (kind, root, opts) in &mounts {
        if kind == "cgroup"
            && opts.split(',').any(|o| o == "memory")
            && try_dir(root, "memory.limit_in_bytes")
        {
            return Mechanism::V1 { root: root.clone() };
        }
    }
    let systemd = Command::new("systemd-run")
        .args(["--scope", "--quiet", "-p", "MemoryMax=1G", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if systemd.is_ok_and(|s| s.success()) {
        return Mechanism::SystemdRun;
    }
    Mechanism::None
}

/// One server's memory cgroup (or systemd scope).
#[derive(Debug, Clone)]
pub struct MemoryCgroup {
    mechanism: Mechanism,
    dir: Option<PathBuf>,
    limit_bytes: u64,
}

impl MemoryCgroup {
    /// Creates a cgroup named `name` limited to `limit_bytes` (no swap), or `None` when the
    /// mechanism is `None`.
    pub fn create(
        mechanism: &Mechanism,
        name: &str,
        limit_bytes: u64,
    ) -> anyhow::Result<Option<Self>> {
        use anyhow::Context;
        let dir = match mechanism {
            Mechanism::V2 { root } => {
                let dir = root.join(name);
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                fs::write(dir.join("memory.max"), limit_bytes.to_string())
                    .with_context(|| format!("{}/memory.max", dir.display()))?;
                let _ = fs::write(dir.join("memory.swap.max"), "0");
                Some(dir)
            }
            Mechanism::V1 { root } => {
                let dir = root.join(name);
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                fs::write(dir.join("memory.limit_in_bytes"), limit_bytes.to_string())
                    .with_context(|| format!("{}/memory.limit_in_bytes", dir.display()))?;
                // Swap off for this group, where the kernel accounts it.
                let _ = fs::write(
                    dir.join("memory.memsw.limit_in_bytes"),
                    limit_bytes.to_string(),
                );
                Some(dir)
            }
            Mechanism::SystemdRun => None,
            Mechanism::None => return Ok(None),
        };
        Ok(Some(Self {
            mechanism: mechanism.clone(),
            dir,
            limit_bytes,
        }))
    }

    /// The program and arguments that run `argv` inside the limit.
    pub fn wrap(&self, argv: &[String]) -> (String, Vec<String>) {
        match (&self.mechanism, &self.dir) {
            (Mechanism::SystemdRun, _) => {
                let mut args = vec![
                    "--scope".to_string(),
                    "--quiet".into(),
                    "-p".into(),
                    format!("MemoryMax={}", self.limit_bytes),
                    "-p".into(),
                    "MemorySwapMax=0".into(),
                    "--".into(),
                ];
                args.extend(argv.iter().cloned());
                ("systemd-run".into(), args)
            }
            (_, Some(dir)) => {
                let mut args = vec![
                    "-c".to_string(),
                    r#"echo $$ > "$0/cgroup.procs" && exec "$@""#.into(),
                    dir.display().to_string(),
                ];
                args.extend(argv.iter().cloned());
                ("sh".into(), args)
            }
            (_, None) => (argv[0].clone(), argv[1..].to_vec()),
        }
    }

    /// Current usage, bytes.
    pub fn usage_bytes(&self) -> Option<u64> {
        let file = match self.mechanism {
            Mechanism::V2 { .. } => "memory.current",
            Mechanism::V1 { .. } => "memory.usage_in_bytes",
            _ => return None,
        };
        fs::read_to_string(self.dir.as_ref()?.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// OOM kills the kernel counted in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.mechanism {
            Mechanism::V2 { .. } => "memory.events",
            Mechanism::V1 { .. } => "memory.oom_control",
            _ => return 0,
        };
        let Some(dir) = &self.dir else { return 0 };
        fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes the cgroup (its processes have exited).
    pub fn remove(self) {
        if let Some(dir) = self.dir {
            // The kernel empties a cgroup a moment after its last process is reaped.
            for _ in 0..50 {
                if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
