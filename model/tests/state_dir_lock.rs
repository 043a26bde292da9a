//! The state directory's lock dies with its holder: a holder process killed with `SIGKILL` — a
//! plain child, and the init (pid 1) of its own pid namespace, as a service in a container runs —
//! leaves a directory the next process opens at once.
//!
//! A binary of its own: it spawns processes, and a process spawned by one test thread holds the
//! other threads' locks until it `exec`s (model/src/state_dir.rs), which would make concurrent
//! reopen tests flaky. The holder is this same binary, re-executed to run [`lock_holder_child`].

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use pagegen_model::{ModelError, StateDir};

/// Set in the child process: the state directory [`lock_holder_child`] opens.
const HOLDER_ENV: &str = "PAGEGEN_TEST_STATE_DIR_HOLDER";
/// What the child prints once it holds the lock, followed by its pid.
const HELD: &str = "pagegen-test-state-dir-held";

fn expect_locked(dir: &Path) -> Option<u32> {
    match StateDir::open(dir) {
        Err(ModelError::Locked { pid, .. }) => pid,
        other => panic!("expected Locked, got {other:?}"),
    }
}

/// Not a test: the child process of the kill-and-reopen test (this binary, re-executed with
/// [`HOLDER_ENV`] set). Opens the directory, says so on stdout, and holds it until its stdin
/// closes or it is killed.
#[test]
#[ignore = "child process of a_killed_holder_releases_the_lock_*; does nothing when run alone"]
fn lock_holder_child() {
    let Some(dir) = std::env::var_os(HOLDER_ENV) else {
        return;
    };
    let held = StateDir::open(PathBuf::from(dir)).unwrap();
    println!("{HELD} {}", std::process::id());
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_line(&mut String::new());
    drop(held);
}

/// Starts `launcher` + this binary as [`lock_holder_child`] on `dir` and waits until it holds the
/// lock. Returns the child, its stdin (kept open, the child waits on it) and the pid the holder
/// printed (as its own pid namespace sees it).
fn spawn_holder(launcher: &[&str], dir: &Path) -> (Child, ChildStdin, u32) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match launcher {
        [] => Command::new(&exe),
        [first, rest @ ..] => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
    };
    let mut child = cmd
        .args(["--exact", "lock_holder_child"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(HOLDER_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Synchronisation: the child prints HELD only once its open has succeeded.
    let pid = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the holder exited before taking the lock"))
            .unwrap();
        // libtest may have printed the test's name on the same line.
        if let Some((_, pid)) = line.split_once(HELD) {
            break pid.trim().parse().unwrap();
        }
    };
    (child, stdin, pid)
}

/// The ids of `parent`'s child processes, from `/proc/<pid>/stat` (the fourth field is the ppid).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        if after.split_whitespace().nth(1) == Some(parent.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

/// The `unshare` command line that makes a pid namespace here, or why none can be made.
fn pid_namespace_launcher() -> Result<Vec<&'static str>, String> {
    let mut why = Vec::new();
    for args in [
        &["--pid", "--fork", "--mount-proc"][..],
        &[
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--mount-proc",
        ][..],
    ] {
        match Command::new("unshare")
            .args(args)
            .arg("true")
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {
                return Ok(std::iter::once("unshare")
                    .chain(args.iter().copied())
                    .collect())
            }
            Ok(s) => why.push(format!("`unshare {}` refused ({s})", args.join(" "))),
            Err(e) => return Err(format!("no unshare here: {e}")),
        }
    }
    Err(why.join("; "))
}

#[test]
fn a_killed_holder_releases_the_lock_even_as_pid_1_of_a_pid_namespace() {
    // A plain child process, killed with SIGKILL (`Child::kill`).
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, stdin, pid) = spawn_holder(&[], tmp.path());
    assert_eq!(pid, child.id());
    assert_eq!(expect_locked(tmp.path()), Some(pid), "held by the child");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    assert!(!status.success(), "killed: {status}");
    let d = StateDir::open(tmp.path()).expect("reopen after the holder was killed");
    drop(d);

    // The container case: the holder is pid 1 of its own pid namespace, killed with SIGKILL from
    // outside it. `LOCK` still says `1`, and that must not matter.
    let launcher = match pid_namespace_launcher() {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipping the pid-namespace case (the plain case above passed): {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mut unshare, stdin, pid) = spawn_holder(&launcher, tmp.path());
    assert_eq!(pid, 1, "the holder is its namespace's init");
    assert_eq!(expect_locked(tmp.path()), Some(1));
    let init = children_of(unshare.id());
    assert_eq!(init.len(), 1, "unshare --fork has one child: {init:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &init[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {}: {killed}", init[0]);
    // unshare exits once its child is reaped, which is after the child's files (and so its
    // lock) were closed.
    unshare.wait().unwrap();
    drop(stdin);
    assert_eq!(fs::read_to_string(tmp.path().join("LOCK")).unwrap(), "1\n");
    let d = StateDir::open(tmp.path()).expect("reopen after the namespace's init was killed");
    assert_eq!(
        fs::read_to_string(tmp.path().join("LOCK")).unwrap(),
        format!("{}\n", std::process::id())
    );
    drop(d);
}
