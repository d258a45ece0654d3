//! The closure of store paths found without any metadata: the paths present
//! in a store directory are the candidates, each path's NAR is searched for
//! their hash parts ([`crate::refscan`]), and the references found are
//! followed until the closure is complete.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::thread;

use thiserror::Error;

use crate::nar::{NarError, NarIdentity};
use crate::refscan::{hash_part, scan_path, Candidates, HashPart};

/// One path of the closure, named by its base name (`<hash>-<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedPath {
    pub name: String,
    pub nar: NarIdentity,
    /// Base names, sorted; the path itself when it refers to itself.
    pub references: Vec<String>,
}

#[derive(Debug, Error)]
pub enum ScanError {
    #[error("cannot list the store {}: {source}", dir.display())]
    List { dir: PathBuf, source: io::Error },
    #[error("{name}: not a store path in {}", dir.display())]
    NotInStore { dir: PathBuf, name: String },
    #[error("{referrer} contains the hash {hash}, which names several entries of the store ({names}); cannot tell which it refers to")]
    Ambiguous {
        referrer: String,
        hash: String,
        names: String,
    },
    #[error(transparent)]
    Nar(#[from] NarError),
}

/// The store paths present in a store directory, by hash part.
struct StoreListing {
    dir: PathBuf,
    by_hash: HashMap<HashPart, Vec<String>>,
    hashes: Candidates,
}

impl StoreListing {
    /// Lists `dir`: every entry named like a store path counts. Hidden
    /// entries (`.links`) and names that are not UTF-8 never are store paths.
    fn read(dir: &Path) -> Result<Self, ScanError> {
        let list_error = |source| ScanError::List {
            dir: dir.to_owned(),
            source,
        };
        let mut by_hash: HashMap<HashPart, Vec<String>> = HashMap::new();
        for entry in fs::read_dir(dir).map_err(list_error)? {
            let name = entry.map_err(list_error)?.file_name();
            let Some(name) = name.to_str().filter(|n| is_store_name(n)) else {
                continue;
            };
            if let Some(hash) = hash_part(name.as_bytes()) {
                by_hash.entry(hash).or_default().push(name.to_owned());
            }
        }
        let hashes = by_hash.keys().copied().collect();
        Ok(Self {
            dir: dir.to_owned(),
            by_hash,
            hashes,
        })
    }

    /// The store path a hash part found in `referrer` names. Besides a path,
    /// a store may hold leftovers named after it (`<path>.lock`,
    /// `<path>.check`): the path is the entry the others extend.
    fn resolve(&self, hash: &HashPart, referrer: &str) -> Result<&str, ScanError> {
        let names = &self.by_hash[hash];
        let shortest = names.iter().min_by_key(|n| n.len()).expect("listed");
        let extends = |n: &String| {
            n == shortest
                || n.strip_prefix(shortest.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        };
        if names.iter().all(extends) {
            Ok(shortest)
        } else {
            Err(ScanError::Ambiguous {
                referrer: referrer.to_owned(),
                hash: String::from_utf8_lossy(hash).into_owned(),
                names: names.join(", "),
            })
        }
    }

    fn contains(&self, name: &str) -> bool {
        hash_part(name.as_bytes()).is_some_and(|h| {
            self.by_hash
                .get(&h)
                .is_some_and(|n| n.iter().any(|n| n == name))
        })
    }
}

/// Nix's rule for a store path's base name: a hash part, `-`, and a name of
/// `[A-Za-z0-9+-._?=]`, not starting with `.`.
fn is_store_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() > 33
        && hash_part(bytes).is_some()
        && bytes[32] == b'-'
        && bytes[33..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

/// Scans the closure of `roots` (base names of paths in the store directory
/// `store_dir`) on up to `threads` threads, the store paths present in
/// `store_dir` being the candidate references. Sorted by name.
pub fn scan_closure(
    store_dir: &Path,
    roots: &[String],
    threads: usize,
) -> Result<Vec<ScannedPath>, ScanError> {
    let store = &StoreListing::read(store_dir)?;
    for root in roots {
        if !store.contains(root) {
            return Err(ScanError::NotInStore {
                dir: store.dir.clone(),
                name: root.clone(),
            });
        }
    }
    let queue = WorkQueue::new(roots.iter().cloned());
    thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while let Some(name) = queue.take() {
                    let result = scan_one(store, &name);
                    queue.done(result);
                }
            });
        }
    });
    let mut paths = queue.into_result()?;
    paths.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(paths)
}

fn scan_one(store: &StoreListing, name: &str) -> Result<ScannedPath, ScanError> {
    let (nar, found) = scan_path(&store.dir.join(name), &store.hashes)?;
    let references = found
        .iter()
        .map(|hash| store.resolve(hash, name).map(str::to_owned))
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(ScannedPath {
        name: name.to_owned(),
        nar,
        references: references.into_iter().collect(),
    })
}

/// Paths waiting to be scanned, shared by the scanning threads; a path is
/// queued once, when it is first seen. Threads stop when nothing is queued
/// nor being scanned, or at the first error.
struct WorkQueue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

struct QueueState {
    waiting: VecDeque<String>,
    seen: HashSet<String>,
    busy: usize,
    scanned: Vec<ScannedPath>,
    error: Option<ScanError>,
}

impl WorkQueue {
    fn new(roots: impl Iterator<Item = String>) -> Self {
        let mut seen = HashSet::new();
        let waiting = roots.filter(|r| seen.insert(r.clone())).collect();
        Self {
            state: Mutex::new(QueueState {
                waiting,
                seen,
                busy: 0,
                scanned: Vec::new(),
                error: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn take(&self) -> Option<String> {
        let mut state = self.state.lock().expect("scan queue poisoned");
        loop {
            if state.error.is_some() {
                return None;
            }
            if let Some(name) = state.waiting.pop_front() {
                state.busy += 1;
                return Some(name);
            }
            if state.busy == 0 {
                return None;
            }
            state = self.changed.wait(state).expect("scan queue poisoned");
        }
    }

    fn done(&self, result: Result<ScannedPath, ScanError>) {
        let mut state = self.state.lock().expect("scan queue poisoned");
        state.busy -= 1;
        match result {
            Ok(path) => {
                for r in &path.references {
                    if state.seen.insert(r.clone()) {
                        state.waiting.push_back(r.clone());
                    }
                }
                state.scanned.push(path);
            }
            Err(e) => {
                state.error.get_or_insert(e);
            }
        }
        self.changed.notify_all();
    }

    fn into_result(self) -> Result<Vec<ScannedPath>, ScanError> {
        let state = self.state.into_inner().expect("scan queue poisoned");
        match state.error {
            Some(e) => Err(e),
            None => Ok(state.scanned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_of;
    use crate::nar;
    use std::os::unix::fs::symlink;

    const HA: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
    const HB: &str = "1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b";
    const HC: &str = "2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c";
    const HD: &str = "3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d";

    /// A store: a → b (by its path) and itself; b → c (by its bare hash, in
    /// a symlink target); c → nothing; d (unrelated, refers to a).
    fn store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        fs::create_dir(s.join(format!("{HA}-a"))).unwrap();
        fs::write(
            s.join(format!("{HA}-a/data")),
            format!("/nix/store/{HB}-b and /nix/store/{HA}-a"),
        )
        .unwrap();
        symlink(format!("../{HC}"), s.join(format!("{HB}-b"))).unwrap();
        fs::write(s.join(format!("{HC}-c")), b"leaf").unwrap();
        fs::write(s.join(format!("{HD}-d")), HA).unwrap();
        // Not store paths: hidden, or not named like one.
        fs::create_dir(s.join(".links")).unwrap();
        fs::write(s.join("README"), HD).unwrap();
        dir
    }

    #[test]
    fn follows_references_to_the_closure() {
        let dir = store();
        for threads in [1, 3] {
            let got = scan_closure(dir.path(), &[format!("{HA}-a")], threads).unwrap();
            let names: Vec<(&str, Vec<String>)> = got
                .iter()
                .map(|p| (p.name.as_str(), p.references.clone()))
                .collect();
            assert_eq!(
                names,
                vec![
                    (
                        &*format!("{HA}-a"),
                        vec![format!("{HA}-a"), format!("{HB}-b")]
                    ),
                    (&*format!("{HB}-b"), vec![format!("{HC}-c")]),
                    (&*format!("{HC}-c"), vec![]),
                ]
            );
            for p in &got {
                let mut reference = Vec::new();
                nar::dump(&dir.path().join(&p.name), &mut reference).unwrap();
                let (hash, size) = sha256_of(&reference);
                assert_eq!(p.nar, NarIdentity { hash, size }, "{}", p.name);
            }
        }
    }

    #[test]
    fn leftovers_named_after_a_path_do_not_make_it_ambiguous() {
        let dir = store();
        fs::write(dir.path().join(format!("{HB}-b.lock")), b"").unwrap();
        let got = scan_closure(dir.path(), &[format!("{HA}-a")], 2).unwrap();
        assert_eq!(
            got[0].references,
            vec![format!("{HA}-a"), format!("{HB}-b")]
        );

        fs::write(dir.path().join(format!("{HB}-other")), b"").unwrap();
        let err = scan_closure(dir.path(), &[format!("{HA}-a")], 2).unwrap_err();
        assert!(matches!(err, ScanError::Ambiguous { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("{HB}-b, "))
                || err.to_string().contains(&format!("{HB}-other, ")),
            "{err}"
        );
    }

    #[test]
    fn a_root_that_is_not_in_the_store_is_named() {
        let dir = store();
        let err = scan_closure(dir.path(), &[format!("{HA}-nope")], 1).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{HA}-nope: not a store path in ")),
            "{err}"
        );
    }
}
