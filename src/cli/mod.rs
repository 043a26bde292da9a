//! The `pagegen` command line (feature `cli`, on by default): what a state directory learned, and
//! moving the learned model between instances.
//!
//! | command | does |
//! |---|---|
//! | `pagegen profile [--state-dir DIR] [--json]` | per-route profiles, predictor accuracy and last grants, read without the lock ([`profile`]) |
//! | `pagegen profile --records [--state-dir DIR]` | every stored request as one JSON line, in the order stored: its prediction and predictor, grant, usage and outcome ([`profile::records`]) |
//! | `pagegen export FILE [--state-dir DIR]` | writes the champion model's weights ([`ModelRuntime::export`](pagegen_model::ModelRuntime::export)) |
//! | `pagegen import FILE [--state-dir DIR]` | installs weights another instance exported ([`ModelRuntime::import`](pagegen_model::ModelRuntime::import)) |
//! | `pagegen train [--rounds N] [--state-dir DIR]` | trains the model now from the recorded profiles, unpaced, and checkpoints the model when the gate has it serve ([`ModelRuntime::train_now`](pagegen_model::ModelRuntime::train_now)) |
//!
//! `profile` only reads: a live server may hold the directory, and a corrupt file is reported and left
//! as it is. `export`, `import` and `train` open the model as a runtime does, lock included, so they
//! refuse a directory a running server holds. `train` is the offline form of the trainer thread's
//! round: a server started afterwards serves the promoted model from its first request, where the
//! trainer thread would first wait `trainer_interval_s` and then spread the round over minutes. The binary (`src/bin/pagegen.rs`) only parses arguments and
//! calls [`run`].

pub mod json;
pub mod profile;
mod table;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pagegen_model::checkpoint::Start;
use pagegen_model::{ModelConfig, ModelError, ModelRuntime, Serving, StateDir};

/// Exit status: the state directory's class registry is corrupt (reported, left untouched).
pub const EXIT_CORRUPT_REGISTRY: u8 = 2;
/// Exit status: the command failed (I/O, a locked directory, a bad model file).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the arguments do not parse (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// How to call the binary.
pub const USAGE: &str = "\
usage: pagegen profile [--state-dir DIR] [--json | --records]
       pagegen export FILE [--state-dir DIR]
       pagegen import FILE [--state-dir DIR]
       pagegen train [--rounds N] [--state-dir DIR]

DIR defaults to $PAGEGEN_STATE_DIR, else ./.pagegen.";

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `profile`.
    Profile {
        /// The state directory.
        dir: PathBuf,
        /// `--json`.
        json: bool,
        /// `--records`: every record as a JSON line instead of the per-class profile.
        records: bool,
    },
    /// `export FILE`.
    Export {
        /// The state directory.
        dir: PathBuf,
        /// Where the weights go.
        file: PathBuf,
    },
    /// `import FILE`.
    Import {
        /// The state directory.
        dir: PathBuf,
        /// The weights to install.
        file: PathBuf,
    },
    /// `train`.
    Train {
        /// The state directory.
        dir: PathBuf,
        /// `--rounds N` (default 1).
        rounds: usize,
    },
    /// `help`, `-h`, `--help`.
    Help,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let verb = args.next().ok_or("no command given")?;
    let verb = verb.to_str().ok_or("the command is not UTF-8")?.to_owned();
    let mut dir: Option<PathBuf> = None;
    let mut json = false;
    let mut records = false;
    let mut file: Option<PathBuf> = None;
    let mut rounds = 1usize;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--rounds") if verb == "train" => {
                let n = args.next().ok_or("--rounds needs a number")?;
                rounds = n
                    .to_str()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        format!("--rounds: {} is not an integer ≥ 1", n.to_string_lossy())
                    })?;
            }
            Some("--state-dir") => {
                dir = Some(args.next().ok_or("--state-dir needs a directory")?.into());
            }
            Some(s) if s.starts_with("--state-dir=") => {
                dir = Some(PathBuf::from(&s["--state-dir=".len()..]));
            }
            Some("--json") if verb == "profile" => json = true,
            Some("--records") if verb == "profile" => records = true,
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if file.is_none() && verb != "profile" && verb != "train" => file = Some(a.into()),
            _ => return Err(format!("unexpected argument {}", a.to_string_lossy())),
        }
    }
    let dir = dir.unwrap_or_else(default_dir);
    let need_file = |file: Option<PathBuf>| file.ok_or(format!("{verb} needs a FILE"));
    Ok(match verb.as_str() {
        "profile" if json && records => {
            return Err("--json and --records: choose one (--records is JSON lines)".into())
        }
        "profile" => Command::Profile { dir, json, records },
        "export" => Command::Export {
            dir,
            file: need_file(file)?,
        },
        "import" => Command::Import {
            dir,
            file: need_file(file)?,
        },
        "train" => Command::Train { dir, rounds },
        "help" | "-h" | "--help" => Command::Help,
        other => return Err(format!("unknown command {other}")),
    })
}

/// `$PAGEGEN_STATE_DIR`, else `./.pagegen` (as the runtime chooses it).
fn default_dir() -> PathBuf {
    std::env::var_os(pagegen_model::state_dir::STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(pagegen_model::state_dir::DEFAULT_STATE_DIR))
}

/// Runs a command, writing results to `out` and problems to `err`; returns the exit status.
pub fn run(cmd: Command, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match cmd {
        Command::Help => writeln!(out, "{USAGE}").map(|()| 0),
        Command::Profile { dir, json, records } => {
            return run_profile(&dir, json, records, out, err)
        }
        Command::Export { dir, file } => export(&dir, &file, err),
        Command::Import { dir, file } => import(&dir, &file, err),
        Command::Train { dir, rounds } => train(&dir, rounds, out, err),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "pagegen: {e}");
            EXIT_FAILED
        }
    }
}

fn run_profile(
    dir: &Path,
    json: bool,
    records: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let (p, lines) = if records {
        profile::records(dir)
    } else {
        (profile::read(dir), Vec::new())
    };
    for w in &p.warnings {
        let _ = writeln!(err, "pagegen profile: {w}");
    }
    let written = if records {
        lines.iter().try_for_each(|l| writeln!(out, "{l}"))
    } else if json {
        writeln!(out, "{}", p.to_json())
    } else {
        write!(out, "{}", table::render(&p))
    };
    if let Err(e) = written {
        let _ = writeln!(err, "pagegen profile: {e}");
        return EXIT_FAILED;
    }
    if p.registry_corrupt {
        EXIT_CORRUPT_REGISTRY
    } else {
        0
    }
}

/// Opens the model as a runtime does (lock included: a running server's directory is refused).
fn open_model(dir: &Path) -> Result<ModelRuntime, String> {
    let state = StateDir::open(dir).map_err(|e| match e {
        ModelError::Locked { .. } => format!("{e}\n(stop the server using it first)"),
        e => e.to_string(),
    })?;
    let clock = Arc::new(pagegen_core::RealClock::new());
    ModelRuntime::open(state, clock, ModelConfig::default()).map_err(|e| e.to_string())
}

/// [`open_model`] for a command that needs an existing state directory; `None` once it has said
/// on `err` why it cannot (`pagegen VERB: …`).
fn open_existing(
    verb: &str,
    dir: &Path,
    err: &mut dyn Write,
) -> std::io::Result<Option<ModelRuntime>> {
    if !dir.is_dir() {
        writeln!(
            err,
            "pagegen {verb}: no state directory at {}",
            dir.display()
        )?;
        return Ok(None);
    }
    match open_model(dir) {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            writeln!(err, "pagegen {verb}: {e}")?;
            Ok(None)
        }
    }
}

fn export(dir: &Path, file: &Path, err: &mut dyn Write) -> std::io::Result<u8> {
    let Some(model) = open_existing("export", dir, err)? else {
        return Ok(EXIT_FAILED);
    };
    if model.start != Start::Loaded {
        writeln!(
            err,
            "pagegen export: note: {} holds no trained model; exporting the starting weights",
            dir.display()
        )?;
    }
    match model.export(file) {
        Ok(()) => {
            writeln!(err, "pagegen export: wrote {}", file.display())?;
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "pagegen export: {e}")?;
            Ok(EXIT_FAILED)
        }
    }
}

/// `pagegen train`: one line per round on `out`, then what became of the checkpoint (written when
/// the last gate has the model serve, see [`ModelRuntime::train_now`]). Exit 0 whatever the gate
/// decided (keeping the champion or serving a baseline is an answer, not a failure); a directory
/// with no state, a locked one or a failed round is [`EXIT_FAILED`].
fn train(
    dir: &Path,
    rounds: usize,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let Some(model) = open_existing("train", dir, err)? else {
        return Ok(EXIT_FAILED);
    };
    let (reports, recovery) = match model.train_now(rounds) {
        Ok(r) => r,
        Err(e) => {
            writeln!(err, "pagegen train: {e}")?;
            return Ok(EXIT_FAILED);
        }
    };
    for note in &recovery.notes {
        writeln!(err, "pagegen train: skipped: {note}")?;
    }
    let need = ModelConfig::default().trainer.min_train_rows;
    for (i, r) in reports.iter().enumerate() {
        let Some(d) = &r.decision else {
            writeln!(
                out,
                "round {}: too few records to train ({} training rows, {need} needed)",
                i + 1,
                r.train_rows
            )?;
            continue;
        };
        let mut scores = format!("challenger {:.4}", d.challenger);
        if let Some(c) = d.champion {
            scores += &format!(", champion {c:.4}");
        }
        for (who, score) in &d.baselines {
            scores += &format!(", {} {score:.4}", who.name());
        }
        writeln!(
            out,
            "round {}: {} training rows, loss {:.4}; gate scores (lower is better): {scores} → {}; serves {}",
            i + 1,
            r.train_rows,
            r.train_loss,
            if d.promote { "promoted" } else { "kept the champion" },
            d.serve.name()
        )?;
    }
    let last = reports.iter().rev().find_map(|r| r.decision.as_ref());
    let checkpoint = model.dir().checkpoint();
    let unchanged = |loaded: &str| {
        if model.start == Start::Loaded {
            format!("{} is unchanged ({loaded})", checkpoint.display())
        } else {
            format!(
                "{} is unchanged (there is none, so a server started here serves the EWMA)",
                checkpoint.display()
            )
        }
    };
    match last {
        Some(d) if d.serve == Serving::Recurrent => writeln!(
            out,
            "checkpoint written: {} (a server started on {} serves this model)",
            checkpoint.display(),
            dir.display()
        )?,
        Some(d) => writeln!(
            out,
            "the gate serves the {} baseline: {}",
            d.serve.name(),
            unchanged("a server started here serves the model there until its own gate round")
        )?,
        None => writeln!(
            out,
            "nothing trained: {}",
            unchanged("the model there keeps serving")
        )?,
    }
    Ok(0)
}

fn import(dir: &Path, file: &Path, err: &mut dyn Write) -> std::io::Result<u8> {
    let model = match open_model(dir) {
        Ok(m) => m,
        Err(e) => {
            writeln!(err, "pagegen import: {e}")?;
            return Ok(EXIT_FAILED);
        }
    };
    match model.import(file) {
        Ok(()) => {
            writeln!(
                err,
                "pagegen import: installed {} as the model of {}",
                file.display(),
                dir.display()
            )?;
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "pagegen import: {e} (nothing changed)")?;
            Ok(EXIT_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn arguments_parse() {
        assert_eq!(
            parse(args("profile --state-dir /x --json")),
            Ok(Command::Profile {
                dir: "/x".into(),
                json: true,
                records: false
            })
        );
        assert_eq!(
            parse(args("profile --records")).map(|c| matches!(
                c,
                Command::Profile {
                    records: true,
                    json: false,
                    ..
                }
            )),
            Ok(true)
        );
        assert!(parse(args("profile --json --records")).is_err());
        assert!(parse(args("export f --records")).is_err());
        assert_eq!(
            parse(args("export f.st --state-dir=/x")),
            Ok(Command::Export {
                dir: "/x".into(),
                file: "f.st".into()
            })
        );
        assert!(parse(args("import")).is_err());
        assert!(parse(args("profile extra")).is_err());
        assert!(parse(args("export a b")).is_err());
        assert!(parse(args("export a --json")).is_err());
        assert_eq!(
            parse(args("train --rounds 3 --state-dir /x")),
            Ok(Command::Train {
                dir: "/x".into(),
                rounds: 3
            })
        );
        assert!(matches!(
            parse(args("train")),
            Ok(Command::Train { rounds: 1, .. })
        ));
        assert!(parse(args("train --rounds 0")).is_err());
        assert!(parse(args("train --rounds")).is_err());
        assert!(parse(args("train f.st")).is_err());
        assert!(parse(args("profile --rounds 2")).is_err());
        assert!(parse(args("frobnicate")).is_err());
        assert!(parse(args("")).is_err());
    }
}
