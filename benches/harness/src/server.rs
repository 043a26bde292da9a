//! Server processes: start one from its command line, learn its port from its first stdout line,
//! sample its memory while it runs, stop it with SIGTERM and report how it ended (an OOM kill
//! shows up as death by SIGKILL plus the memory cgroup's OOM count — the harness observes it, it
//! does not suffer it: the server is a separate process, optionally in its own cgroup).

use std::{
    io::Write as _,
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::Instant,
};

use crate::{cgroup::MemoryCgroup, sys};

/// A runtime under test: a name and the command that starts its server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// Name in reports.
    pub name: String,
    /// Program and arguments. `{port}`, `{state_dir}` and `{workers}` are replaced; when none of
    /// them appears, `--port 0 --state-dir DIR --workers N` is appended.
    pub cmd: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Before the sweep, the runtime serves a training load of every mix (`--train-s`); then this
    /// command, if not empty, runs with `{state_dir}` replaced (e.g. `pagegen train`), so the
    /// measured phases start from what it learned. Empty: the training load only (a learner that
    /// keeps its state in the directory starts warm, like one that trains). Absent: no training.
    #[serde(default)]
    pub train: Option<Vec<String>>,
}

impl RuntimeSpec {
    /// The training command for `state_dir` (`None`: none to run).
    pub fn train_argv(&self, state_dir: &Path) -> Option<Vec<String>> {
        let state = state_dir.display().to_string();
        let cmd = self.train.as_ref().filter(|c| !c.is_empty())?;
        Some(
            cmd.iter()
                .map(|a| a.replace("{state_dir}", &state))
                .collect(),
        )
    }

    /// The argument vector for one start.
    pub fn argv(&self, state_dir: &Path, workers: usize) -> Vec<String> {
        let state = state_dir.display().to_string();
        let has = |p: &str| self.cmd.iter().any(|a| a.contains(p));
        let mut argv: Vec<String> = self
            .cmd
            .iter()
            .map(|a| {
                a.replace("{port}", "0")
                    .replace("{state_dir}", &state)
                    .replace("{workers}", &workers.to_string())
            })
            .collect();
        if !has("{port}") && !has("{state_dir}") && !has("{workers}") {
            argv.extend([
                "--port".into(),
                "0".into(),
                "--state-dir".into(),
                state,
                "--workers".into(),
                workers.to_string(),
            ]);
        }
        argv
    }
}

/// Parses the agreed first line, `listening on http://127.0.0.1:PORT`.
pub fn parse_listening(line: &str) -> Result<SocketAddr> {
    let rest = line
        .trim()
        .strip_prefix("listening on http://")
        .with_context(|| format!("expected `listening on http://HOST:PORT`, got {line:?}"))?;
    let hostport = rest.trim_end_matches('/');
    hostport
        .parse()
        .with_context(|| format!("bad address {hostport:?} in {line:?}"))
}

/// One memory sample.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MemSample {
    /// Seconds since the server started.
    pub t: f64,
    /// Resident set size (VmRSS), MiB.
    pub rss_mb: f64,
    /// The memory cgroup's usage, MiB, when the server runs in one.
    pub cgroup_mb: Option<f64>,
}

/// How a server ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerEnd {
    /// "exit 0", "signal 9 (SIGKILL)", …
    pub status: String,
    /// Killed by a signal before we asked it to stop.
    pub died_early: bool,
    /// The cgroup's OOM-kill count went up, or it died of SIGKILL inside a limit.
    pub oom_killed: bool,
    /// It did not exit within the grace period after SIGTERM and was killed.
    pub forced: bool,
    /// CPU time the server used, s (from /proc before it exited).
    pub cpu_s: f64,
    /// Largest sampled RSS, MiB.
    pub peak_rss_mb: f64,
    /// Largest cgroup usage, MiB.
    pub peak_cgroup_mb: Option<f64>,
    /// Memory samples.
    pub samples: Vec<MemSample>,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    started: Instant,
    cgroup: Option<MemoryCgroup>,
    samples: Arc<Mutex<Vec<MemSample>>>,
    sampler: tokio::task::JoinHandle<()>,
    last_cpu: Arc<Mutex<f64>>,
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

fn read_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn read_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / sys::clock_ticks() as f64)
}

impl Server {
    /// Starts `spec` with its state in `state_dir`, logging its output to `log`, optionally
    /// inside `cgroup`; waits up to `ready_timeout` for the listening line. Memory is sampled
    /// every `sample_every`.
    pub async fn start(
        spec: &RuntimeSpec,
        state_dir: &Path,
        workers: usize,
        log: &Path,
        cgroup: Option<MemoryCgroup>,
        ready_timeout: Duration,
        sample_every: Duration,
    ) -> Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let argv = spec.argv(state_dir, workers);
        let (program, args) = match &cgroup {
            Some(cg) => cg.wrap(&argv),
            None => (argv[0].clone(), argv[1..].to_vec()),
        };
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&program)
            .args(&args)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file.try_clone()?))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}: {:?}", spec.name, argv))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(ready_timeout, lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) => parse_listening(&line)
                .with_context(|| format!("{}: first stdout line", spec.name))?,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                bail!(
                    "{}: exited ({status:?}) before printing its address; its log is {}",
                    spec.name,
                    log.display()
                );
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "{}: no `listening on` line within {ready_timeout:?}; its log is {}",
                    spec.name,
                    log.display()
                );
            }
        };
        // Keep its stdout drained (into the log) so it never blocks on a full pipe.
        // (A plain write per line: the page cache takes it in microseconds, and servers print
        // little after their first line.)
        let mut out = log_file;
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(out, "{line}");
            }
        });

        let started = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let last_cpu = Arc::new(Mutex::new(0.0));
        let sampler = {
            let samples = Arc::clone(&samples);
            let last_cpu = Arc::clone(&last_cpu);
            let cg = cgroup.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(sample_every);
                loop {
                    every.tick().await;
                    let Some(rss_mb) = read_rss_mb(pid) else {
                        break;
                    };
                    if let Some(cpu) = read_cpu_s(pid) {
                        *last_cpu.lock().expect("cpu lock") = cpu;
                    }
                    let cgroup_mb = cg
                        .as_ref()
                        .and_then(|c| c.usage_bytes())
                        .map(|b| b as f64 / 1048576.0);
                    samples.lock().expect("samples lock").push(MemSample {
                        t: started.elapsed().as_secs_f64(),
                        rss_mb,
                        cgroup_mb,
                    });
                }
            })
        };
        Ok(Self {
            child,
            pid,
            addr,
            started,
            cgroup,
            samples,
            sampler,
            last_cpu,
        })
    }

    /// Whether the process has already exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Stops the server (SIGTERM, then SIGKILL after `grace`) and reports how it ended.
    pub async fn stop(mut self, grace: Duration) -> ServerEnd {
        let early = self.child.try_wait().ok().flatten();
        if let Some(cpu) = read_cpu_s(self.pid) {
            *self.last_cpu.lock().expect("cpu lock") = cpu;
        }
        let mut forced = false;
        let status = match early {
            Some(s) => Some(s),
            None => {
                let _ = sys::terminate(self.pid);
                match tokio::time::timeout(grace, self.child.wait()).await {
                    Ok(s) => s.ok(),
                    Err(_) => {
                        forced = true;
                        let _ = self.child.kill().await;
                        self.child.wait().await.ok()
                    }
                }
            }
        };
        self.sampler.abort();
        let signal = status.and_then(|s| s.signal());
        let status_text = match (status, signal) {
            (_, Some(sig)) => format!("signal {sig} ({})", signal_name(sig)),
            (Some(s), None) => format!("exit {}", s.code().unwrap_or(-1)),
            (None, None) => "unknown".to_string(),
        };
        let oom_count = self.cgroup.as_ref().map_or(0, |c| c.oom_kills());
        let died_early = early.is_some();
        let oom_killed =
            oom_count > 0 || (self.cgroup.is_some() && died_early && signal == Some(libc::SIGKILL));
        if let Some(cg) = self.cgroup.take() {
            cg.remove();
        }
        let samples = std::mem::take(&mut *self.samples.lock().expect("samples lock"));
        let peak_rss_mb = samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
        let peak_cgroup_mb = samples.iter().filter_map(|s| s.cgroup_mb).reduce(f64::max);
        let _ = self.started;
        ServerEnd {
            status: status_text,
            died_early,
            oom_killed,
            forced,
            cpu_s: *self.last_cpu.lock().expect("cpu lock"),
            peak_rss_mb,
            peak_cgroup_mb,
            samples,
        }
    }
}

/// A fresh state directory per runtime under the output folder.
pub fn state_dir(out: &Path, runtime: &str) -> PathBuf {
    out.join("state").join(runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agreed_first_line() {
        assert_eq!(
            parse_listening("listening on http://127.0.0.1:43211\n").unwrap(),
            "127.0.0.1:43211".parse().unwrap()
        );
        assert!(parse_listening("Listening at 127.0.0.1:1").is_err());
    }

    #[test]
    fn argv_fills_placeholders_or_appends_the_agreed_flags() {
        let spec = RuntimeSpec {
            name: "t".into(),
            cmd: vec!["site".into(), "--runtime".into(), "tokio".into()],
            env: Default::default(),
            train: None,
        };
        assert_eq!(spec.train_argv(Path::new("/s")), None);
        assert_eq!(
            spec.argv(Path::new("/s"), 2).join(" "),
            "site --runtime tokio --port 0 --state-dir /s --workers 2"
        );
        let spec = RuntimeSpec {
            cmd: vec![
                "srv".into(),
                "--listen=127.0.0.1:{port}".into(),
                "{state_dir}".into(),
            ],
            ..spec
        };
        assert_eq!(
            spec.argv(Path::new("/s"), 2).join(" "),
            "srv --listen=127.0.0.1:0 /s"
        );
        let spec = RuntimeSpec {
            train: Some(vec![
                "pagegen".into(),
                "train".into(),
                "--state-dir={state_dir}".into(),
            ]),
            ..spec
        };
        assert_eq!(
            spec.train_argv(Path::new("/s")).unwrap().join(" "),
            "pagegen train --state-dir=/s"
        );
        let spec = RuntimeSpec {
            train: Some(Vec::new()),
            ..spec
        };
        assert_eq!(spec.train_argv(Path::new("/s")), None);
    }
}
