//! Checkpoints: the model's weights in safetensors, with a format version.
//!
//! A checkpoint holds the tensors named in [`SHAPES`] (candle-nn's names,
//! f32) plus `pagegen.format` (u32: [`CHECKPOINT_VERSION`] and the layer sizes it was built with) and
//! `pagegen.generation` (u32 pair, hi/lo). It is written through candle's own safetensors support to a
//! temporary file, then renamed over the old one, so a crash never leaves half a checkpoint under the
//! real name.
//!
//! [`load_or_fresh`]: a missing checkpoint is a fresh start; a corrupt one (unreadable, wrong
//! tensors, non-finite values) or a stale one (another format version or layer sizes) is reported, moved
//! aside as `<file>.corrupt-<unix s>` / `<file>.stale-<unix s>` (never deleted), and replaced by a
//! fresh start. The same checks guard [`import`]: a fleet shares what one instance learned by copying
//! an [`export`]ed file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use pagegen_core::FEATURE_WIDTH;

use crate::error::ModelError;
use crate::net::state::{GRU_IN, HEAD_HIDDEN, HEAD_IN, HIDDEN};
use crate::net::weights::SHAPES;
use crate::net::NetWeights;
use crate::store::move_aside;
use crate::target::RESOURCES;

/// Checkpoint format version written by this build.
pub const CHECKPOINT_VERSION: u32 = 1;

fn format_tag() -> [u32; 6] {
    [
        CHECKPOINT_VERSION,
        HIDDEN as u32,
        HEAD_HIDDEN as u32,
        GRU_IN as u32,
        HEAD_IN as u32,
        FEATURE_WIDTH as u32,
    ]
}

/// Writes `weights` to `path` atomically (temp file + rename).
pub fn save(weights: &NetWeights, path: &Path) -> Result<(), ModelError> {
    let dev = Device::Cpu;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for ((name, _), data) in SHAPES.iter().zip(weights.tensors()) {
        map.insert(
            (*name).to_string(),
            Tensor::from_slice(data, data.len(), &dev)?,
        );
    }
    map.insert(
        "pagegen.format".into(),
        Tensor::from_slice(&format_tag(), 6, &dev)?,
    );
    let g = weights.generation;
    map.insert(
        "pagegen.generation".into(),
        Tensor::from_slice(&[(g >> 32) as u32, g as u32], 2, &dev)?,
    );
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

/// Why a checkpoint could not be used.
#[derive(Debug)]
enum Unusable {
    Stale(String),
    Corrupt(String),
}

fn read(path: &Path) -> Result<NetWeights, Unusable> {
    let map = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Unusable::Corrupt(e.to_string()))?;
    let u32s = |name: &str| -> Result<Vec<u32>, Unusable> {
        map.get(name)
            .ok_or_else(|| Unusable::Corrupt(format!("missing {name}")))?
            .flatten_all()
            .and_then(|t| t.to_vec1::<u32>())
            .map_err(|e| Unusable::Corrupt(format!("{name}: {e}")))
    };
    let format = u32s("pagegen.format")?;
    if format != format_tag() {
        return Err(Unusable::Stale(format!(
            "format {format:?}, this build writes {:?}",
            format_tag()
        )));
    }
    let gen = u32s("pagegen.generation")?;
    if gen.len() != 2 {
        return Err(Unusable::Corrupt("bad generation".into()));
    }
    let mut vecs = Vec::with_capacity(SHAPES.len());
    for (name, shape) in SHAPES {
        let v = map
            .get(name)
            .ok_or_else(|| Unusable::Corrupt(format!("missing {name}")))?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Unusable::Corrupt(format!("{name}: {e}")))?;
        if v.len() != shape[0] * shape[1] {
            return Err(Unusable::Corrupt(format!("{name} has {} values", v.len())));
        }
        vecs.push(v);
    }
    let mut it = vecs.into_iter();
    let mut next = || it.next().unwrap_or_default();
    let mut w = NetWeights {
        w_ih: next(),
        w_hh: next(),
        b_ih: next(),
        b_hh: next(),
        w1: next(),
        b1: next(),
        w2: next(),
        b2: next(),
        calib: [0.0; RESOURCES],
        generation: (u64::from(gen[0]) << 32) | u64::from(gen[1]),
    };
    let calib = next();
    w.calib.copy_from_slice(&calib[..RESOURCES]);
    if !w.is_valid() {
        return Err(Unusable::Corrupt("non-finite weights".into()));
    }
    Ok(w)
}

/// Loads a checkpoint, or says why it is unusable (the file is left where it is).
pub fn import(path: &Path) -> Result<NetWeights, ModelError> {
    read(path).map_err(|u| ModelError::BadCheckpoint {
        path: path.to_path_buf(),
        reason: match u {
            Unusable::Stale(s) => format!("stale: {s}"),
            Unusable::Corrupt(s) => format!("corrupt: {s}"),
        },
    })
}

/// Writes a copy of `weights` for another instance to [`import`].
pub fn export(weights: &NetWeights, path: &Path) -> Result<(), ModelError> {
    save(weights, path)
}

/// How [`load_or_fresh`] started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The checkpoint loaded.
    Loaded,
    /// There was no checkpoint.
    Fresh,
    /// The checkpoint was unusable; it now lives at the given path.
    Replaced {
        /// Why it was unusable.
        reason: String,
        /// Where it was moved.
        moved_to: PathBuf,
    },
}

/// Loads the checkpoint at `path`, or starts from `fresh()` (see the module docs).
pub fn load_or_fresh(path: &Path, fresh: impl FnOnce() -> NetWeights) -> (NetWeights, Start) {
    if !path.exists() {
        return (fresh(), Start::Fresh);
    }
    match read(path) {
        Ok(w) => (w, Start::Loaded),
        Err(u) => {
            let (what, reason) = match u {
                Unusable::Stale(s) => ("stale", s),
                Unusable::Corrupt(s) => ("corrupt", s),
            };
            let moved_to = move_aside(path, what);
            tracing::warn!(
                checkpoint = %path.display(),
                moved_to = %moved_to.display(),
                %reason,
                "model checkpoint is {what}; starting fresh"
            );
            (fresh(), Start::Replaced { reason, moved_to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_is_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.safetensors");
        let mut w = NetWeights::random(7);
        w.calib = [0.1, 0.2, 0.3, 0.4, 0.5];
        w.generation = 0x1234_5678_9abc;
        save(&w, &p).unwrap();
        let (back, start) = load_or_fresh(&p, NetWeights::zeros);
        assert_eq!(start, Start::Loaded);
        assert_eq!(back, w);
        assert_eq!(import(&p).unwrap(), w);
    }

    #[test]
    fn missing_truncated_and_corrupt_checkpoints_start_fresh_and_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.safetensors");
        assert_eq!(load_or_fresh(&p, NetWeights::zeros).1, Start::Fresh);
        save(&NetWeights::random(1), &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for bad in [
            bytes[..bytes.len() / 2].to_vec(),
            b"not safetensors".to_vec(),
            Vec::new(),
        ] {
            std::fs::write(&p, &bad).unwrap();
            assert!(import(&p).is_err());
            let (w, start) = load_or_fresh(&p, NetWeights::zeros);
            assert_eq!(w, NetWeights::zeros());
            match start {
                Start::Replaced { moved_to, .. } => {
                    assert_eq!(std::fs::read(&moved_to).unwrap(), bad);
                    std::fs::remove_file(moved_to).unwrap();
                }
                other => panic!("expected Replaced, got {other:?}"),
            }
        }
        // Flipped bytes inside the tensor data: either caught, or still a valid model; never a panic.
        let mut flipped = bytes.clone();
        for i in (bytes.len() / 3..bytes.len()).step_by(97) {
            flipped[i] ^= 0x5a;
        }
        std::fs::write(&p, &flipped).unwrap();
        let (w, _) = load_or_fresh(&p, NetWeights::zeros);
        assert!(w.is_valid());
    }

    #[test]
    fn stale_format_is_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.safetensors");
        let dev = Device::Cpu;
        let mut map = HashMap::new();
        map.insert(
            "pagegen.format".to_string(),
            Tensor::from_slice(&[CHECKPOINT_VERSION + 1, 1, 1, 1, 1, 1], 6, &dev).unwrap(),
        );
        candle_core::safetensors::save(&map, &p).unwrap();
        match load_or_fresh(&p, NetWeights::zeros).1 {
            Start::Replaced { moved_to, reason } => {
                assert!(moved_to.to_string_lossy().contains(".stale-"), "{reason}");
            }
            other => panic!("expected Replaced, got {other:?}"),
        }
    }
}
