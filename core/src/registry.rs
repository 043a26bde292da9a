//! The class registry: the persisted name → [`ClassId`] map, and the fan-out of class registrations to
//! every subsystem that keeps per-class state.
//!
//! Contracts:
//! - Ids are dense, handed out in registration order, and **stable across restarts**: a registry opened
//!   on a state file gives each known name its old id, so profiles and model checkpoints keyed by id
//!   stay meaningful. [`ClassId::DEFAULT`] is always id 0, named `default`.
//! - [`register`](ClassRegistry::register) is idempotent by name: registering a known name returns its
//!   id and updates its spec (shares, pool, annotation) — and observers hear of the update.
//! - **Fan-out.** A subsystem that keeps per-class state (pagegen-alloc's arenas, pagegen-io's depth
//!   limits, the executor's run queues) implements [`ClassObserver`] and
//!   [`subscribe`](ClassRegistry::subscribe)s. On subscription it hears every class registered so far,
//!   then every later registration or update. Observers are called outside the registry's lock, on the
//!   registering thread; a subscription racing a registration may hear one class twice, so
//!   observers must be idempotent.
//! - **Persistence.** The file is text, one `id<TAB>name` per line after a `pagegen-classes 1` header,
//!   rewritten atomically (temp file + rename) when a new name appears. A file that cannot be parsed is
//!   reported, moved aside as `<file>.corrupt-<unix seconds>` (never deleted) and replaced by a fresh
//!   registry.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::class::{ClassId, ClassSpec, Shares};
use crate::error::RegistryError;

const HEADER: &str = "pagegen-classes 1";

/// A subsystem that keeps per-class state.
pub trait ClassObserver: Send + Sync + 'static {
    /// A class was registered, or its spec changed.
    fn class_registered(&self, id: ClassId, spec: &ClassSpec);
}

struct Inner {
    by_name: HashMap<Arc<str>, ClassId>,
    /// Indexed by id. `None` for an id known from the state file but not registered in this run.
    specs: Vec<Option<ClassSpec>>,
    names: Vec<Arc<str>>,
}

/// The name → id map and observer list. Shared as `Arc<ClassRegistry>` by the runtime.
pub struct ClassRegistry {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
    observers: RwLock<Vec<Arc<dyn ClassObserver>>>,
}

impl fmt::Debug for ClassRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("ClassRegistry")
            .field("path", &self.path)
            .field("classes", &inner.names)
            .finish()
    }
}

impl ClassRegistry {
    /// A registry that persists nothing (tests, or a runtime without a state directory).
    pub fn in_memory() -> Self {
        let reg = ClassRegistry {
            path: None,
            inner: Mutex::new(Inner {
                by_name: HashMap::new(),
                specs: Vec::new(),
                names: Vec::new(),
            }),
            observers: RwLock::new(Vec::new()),
        };
        reg.insert_default();
        reg
    }

    /// Opens (or creates) the registry persisted at `path`. A corrupt file is moved aside and replaced
    /// (see module docs); only real I/O failures are errors.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let path = path.into();
        let io_err = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        let mut reg = ClassRegistry::in_memory();
        reg.path = Some(path.clone());
        // Bytes, not `read_to_string`: a file that is not UTF-8 is corrupt, not an I/O failure.
        let text = fs::read(&path)
            .map(|b| String::from_utf8(b).unwrap_or_else(|_| String::from("\0 not UTF-8")));
        match text {
            Ok(text) => match parse(&text) {
                Ok(entries) => {
                    let mut inner = reg.lock();
                    for (id, name) in entries {
                        if id == ClassId::DEFAULT {
                            continue;
                        }
                        while inner.names.len() <= id.index() {
                            // Ids are dense in a file we wrote; a gap is filled with a placeholder
                            // name that no route can have, so later ids keep their values.
                            let gap: Arc<str> = format!("\0gap-{}", inner.names.len()).into();
                            let gid = ClassId::from_raw(inner.names.len() as u32);
                            inner.by_name.insert(gap.clone(), gid);
                            inner.names.push(gap);
                            inner.specs.push(None);
                        }
                        let old = inner.names[id.index()].clone();
                        inner.by_name.remove(&old);
                        inner.by_name.insert(name.clone(), id);
                        inner.names[id.index()] = name;
                    }
                }
                Err(why) => {
                    let aside = aside_path(&path);
                    fs::rename(&path, &aside).map_err(io_err)?;
                    tracing::warn!(
                        file = %path.display(),
                        moved_to = %aside.display(),
                        "class registry is corrupt ({why}); moved aside, starting fresh"
                    );
                    reg.save().map_err(io_err)?;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => reg.save().map_err(io_err)?,
            Err(e) => return Err(io_err(e)),
        }
        Ok(reg)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert_default(&self) {
        let mut inner = self.lock();
        let name: Arc<str> = "default".into();
        inner.by_name.insert(name.clone(), ClassId::DEFAULT);
        inner.names.push(name.clone());
        inner.specs.push(Some(ClassSpec::new(name)));
    }

    /// Registers `spec` (or updates the class of the same name) and tells every observer. Returns the
    /// class's id.
    pub fn register(&self, spec: ClassSpec) -> Result<ClassId, RegistryError> {
        let (id, is_new) = {
            let mut inner = self.lock();
            match inner.by_name.get(&spec.name).copied() {
                Some(id) => {
                    inner.specs[id.index()] = Some(spec.clone());
                    (id, false)
                }
                None => {
                    let n = inner.names.len();
                    if n >= ClassId::MAX_CLASSES {
                        return Err(RegistryError::Full(n));
                    }
                    let id = ClassId::from_raw(n as u32);
                    inner.by_name.insert(spec.name.clone(), id);
                    inner.names.push(spec.name.clone());
                    inner.specs.push(Some(spec.clone()));
                    (id, true)
                }
            }
        };
        if is_new {
            self.save().map_err(|source| RegistryError::Io {
                path: self.path.clone().unwrap_or_default(),
                source,
            })?;
        }
        self.notify(id, &spec);
        Ok(id)
    }

    /// Changes a registered class's shares and tells every observer. Returns `false` for an unknown or
    /// unregistered id.
    pub fn set_shares(&self, id: ClassId, shares: Shares) -> bool {
        let spec = {
            let mut inner = self.lock();
            match inner.specs.get_mut(id.index()).and_then(Option::as_mut) {
                Some(spec) => {
                    spec.shares = shares;
                    spec.clone()
                }
                None => return false,
            }
        };
        self.notify(id, &spec);
        true
    }

    fn notify(&self, id: ClassId, spec: &ClassSpec) {
        let observers = self
            .observers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for o in observers {
            o.class_registered(id, spec);
        }
    }

    /// Adds an observer; it hears every class registered so far at once.
    pub fn subscribe(&self, observer: Arc<dyn ClassObserver>) {
        self.observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer.clone());
        for (id, spec) in self.classes() {
            observer.class_registered(id, &spec);
        }
    }

    /// The id of a name, if known (registered in this run or remembered from the state file).
    pub fn id_of(&self, name: &str) -> Option<ClassId> {
        self.lock().by_name.get(name).copied()
    }

    /// The spec of a class registered in this run.
    pub fn spec(&self, id: ClassId) -> Option<ClassSpec> {
        self.lock().specs.get(id.index()).cloned().flatten()
    }

    /// Every class registered in this run, by id.
    pub fn classes(&self) -> Vec<(ClassId, ClassSpec)> {
        self.lock()
            .specs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.clone().map(|s| (ClassId::from_raw(i as u32), s)))
            .collect()
    }

    /// Number of ids handed out (registered or remembered).
    pub fn len(&self) -> usize {
        self.lock().names.len()
    }

    /// Always `false`: the default class is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = String::from(HEADER);
        text.push('\n');
        for (i, name) in self.lock().names.iter().enumerate() {
            text.push_str(&format!("{i}\t{}\n", escape(name)));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    path.with_file_name(name)
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '\t' => out.push_str("%09"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).ok_or("truncated escape")?;
        out.push(match code {
            "25" => '%',
            "09" => '\t',
            "0A" => '\n',
            "0D" => '\r',
            other => return Err(format!("unknown escape %{other}")),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses the text of a registry file into its `(id, name)` entries, or says why it is corrupt.
///
/// A pure function for tools that must only read a state directory (`pagegen profile`):
/// [`ClassRegistry::open`] moves a corrupt file aside and rewrites a missing one, this touches
/// nothing. Entries may leave gaps in the ids; `default` is not added when absent.
pub fn parse_entries(text: &str) -> Result<Vec<(ClassId, Arc<str>)>, String> {
    parse(text)
}

fn parse(text: &str) -> Result<Vec<(ClassId, Arc<str>)>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err("missing header".into());
    }
    let mut seen_names = std::collections::HashSet::new();
    let mut seen_ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let (id, name) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {}: no tab", n + 2))?;
        let id: u32 = id
            .parse()
            .map_err(|_| format!("line {}: bad id {id:?}", n + 2))?;
        if id as usize >= ClassId::MAX_CLASSES {
            return Err(format!("line {}: id {id} out of range", n + 2));
        }
        let name: Arc<str> = unescape(name)
            .map_err(|e| format!("line {}: {e}", n + 2))?
            .into();
        if !seen_ids.insert(id) || !seen_names.insert(name.clone()) {
            return Err(format!("line {}: duplicate entry", n + 2));
        }
        if id == 0 && &*name != "default" {
            return Err("id 0 is not `default`".into());
        }
        out.push((ClassId::from_raw(id), name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(ClassId, Shares)>>,
        calls: AtomicUsize,
    }
    impl ClassObserver for Recorder {
        fn class_registered(&self, id: ClassId, spec: &ClassSpec) {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.seen.lock().unwrap().push((id, spec.shares));
        }
    }

    #[test]
    fn ids_are_dense_idempotent_and_default_is_zero() {
        let reg = ClassRegistry::in_memory();
        assert_eq!(reg.id_of("default"), Some(ClassId::DEFAULT));
        let a = reg.register(ClassSpec::new("GET /")).unwrap();
        let b = reg.register(ClassSpec::new("GET /search")).unwrap();
        assert_eq!((a.raw(), b.raw()), (1, 2));
        assert_eq!(reg.register(ClassSpec::new("GET /")).unwrap(), a);
        assert_eq!(reg.len(), 3);
    }

    #[test]
    fn ids_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classes");
        let names = ["GET /", "GET /search\twith tab", "GET /report/%d"];
        let ids: Vec<_> = {
            let reg = ClassRegistry::open(&path).unwrap();
            names
                .iter()
                .map(|n| reg.register(ClassSpec::new(*n)).unwrap())
                .collect()
        };
        let reg = ClassRegistry::open(&path).unwrap();
        // Register in another order: ids must not move.
        for (n, id) in names.iter().zip(&ids).rev() {
            assert_eq!(reg.register(ClassSpec::new(*n)).unwrap(), *id);
        }
        let fresh = reg.register(ClassSpec::new("GET /feed")).unwrap();
        assert_eq!(fresh.raw(), 4);
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classes");
        fs::write(&path, "pagegen-classes 1\n1\tGET /\n1\tGET /again\n").unwrap();
        let reg = ClassRegistry::open(&path).unwrap();
        assert_eq!(reg.len(), 1, "fresh start holds only the default class");
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "the corrupt file is kept");
        assert!(fs::read_to_string(aside[0].path())
            .unwrap()
            .contains("GET /again"));
        assert!(fs::read_to_string(&path).unwrap().starts_with(HEADER));
    }

    #[test]
    fn observers_hear_past_and_future_classes() {
        let reg = ClassRegistry::in_memory();
        let a = reg.register(ClassSpec::new("a")).unwrap();
        let rec = Arc::new(Recorder::default());
        reg.subscribe(rec.clone());
        assert_eq!(
            rec.calls.load(Ordering::Relaxed),
            2,
            "default and a replayed"
        );
        let b = reg
            .register(ClassSpec::new("b").with_shares(Shares::new(300).unwrap()))
            .unwrap();
        assert!(reg.set_shares(a, Shares::new(10).unwrap()));
        assert!(!reg.set_shares(ClassId::from_raw(99), Shares::MIN));
        let seen = rec.seen.lock().unwrap().clone();
        assert_eq!(seen[2], (b, Shares::new(300).unwrap()));
        assert_eq!(seen[3], (a, Shares::new(10).unwrap()));
    }

    #[test]
    fn escaping_round_trips() {
        for s in ["plain", "a%b", "tab\there", "nl\nx\r", "%09"] {
            assert_eq!(unescape(&escape(s)).unwrap(), s);
        }
        assert!(unescape("%zz").is_err());
        assert!(unescape("%2").is_err());
    }
}
