//! Reading a closure from Nix's SQLite database (`db.sqlite`) without Nix,
//! strictly read-only: no lock is taken, nothing is ever created, written or
//! deleted beside the database, and it works on a read-only mount.
//!
//! Nix keeps the database in WAL mode, and rows a running (or killed) Nix
//! registered may sit only in `db.sqlite-wal`. SQLite's `immutable=1` would
//! ignore that file, and its normal read-only mode takes locks and creates
//! or writes `db.sqlite-shm`. So the database is opened through a file
//! system of our own, [`VFS_NAME`]: SQLite's `unix-none` (no locking), with
//! every named file opened read-only and deletion refused. Without shared
//! memory SQLite keeps the WAL index in heap memory (exclusive locking
//! mode), rebuilt from `db.sqlite-wal` itself: the WAL's rows are seen, the
//! `-shm` file is never touched. Only when there is no WAL file at all is
//! the database opened as immutable, being then whole in its one file.
//!
//! Without locks a Nix process may write while we read; the files' sizes
//! and times are compared before and after, and the read is repeated if
//! they changed.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{ffi, Connection, OpenFlags, OptionalExtension};
use thiserror::Error;

/// The read-only, lock-free file system the database is opened through.
pub const VFS_NAME: &CStr = c"narcache-read-only";
const ATTEMPTS: u32 = 5;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What the database records about one valid path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbPathInfo {
    pub path: String,
    /// As the database stores it: `sha256:<base16>`.
    pub nar_hash: String,
    pub nar_size: u64,
    pub deriver: Option<String>,
    pub ca: Option<String>,
    pub sigs: Vec<String>,
    /// Indexes of the referenced paths in the closure read (which is
    /// sorted by path, so these are too): one copy of each path however
    /// many refer to it.
    pub references: Vec<usize>,
}

#[derive(Debug, Error)]
pub enum StoreDbError {
    #[error("{}: {source}", db.display())]
    Sqlite {
        db: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{}: {source}", db.display())]
    Stat { db: PathBuf, source: std::io::Error },
    #[error("{}: not a Nix store database ({reason})", db.display())]
    NotNixDb { db: PathBuf, reason: String },
    #[error("{path} is not a valid path in the store database {}", db.display())]
    NotValid { db: PathBuf, path: String },
    #[error("{}: changed during each of {ATTEMPTS} reads (a Nix process is writing it); try again", db.display())]
    Unstable { db: PathBuf },
    #[error("cannot set up SQLite's read-only file system: {0}")]
    Vfs(String),
}

/// The closure of `roots` (full store paths) as the database at `db`
/// records it, sorted by path.
pub fn read_closure(db: &Path, roots: &[String]) -> Result<Vec<DbPathInfo>, StoreDbError> {
    register_vfs()?;
    for attempt in 1..=ATTEMPTS {
        let before = Snapshot::take(db)?;
        let result = read_once(db, roots);
        if Snapshot::take(db)? == before {
            return result;
        }
        if attempt < ATTEMPTS {
            thread::sleep(RETRY_PAUSE);
        }
    }
    Err(StoreDbError::Unstable { db: db.to_owned() })
}

fn read_once(db: &Path, roots: &[String]) -> Result<Vec<DbPathInfo>, StoreDbError> {
    let sqlite = |source| StoreDbError::Sqlite {
        db: db.to_owned(),
        source,
    };
    let conn = open(db).map_err(sqlite)?;
    let have = columns(&conn, "ValidPaths").map_err(sqlite)?;
    let required = ["id", "path", "hash", "deriver", "narSize", "sigs"];
    if let Some(missing) = required.iter().find(|c| !have.iter().any(|h| h == *c)) {
        return Err(StoreDbError::NotNixDb {
            db: db.to_owned(),
            reason: format!("ValidPaths has no column {missing}"),
        });
    }
    // Old databases (before Nix 2.4) have no ca column.
    let ca = if have.iter().any(|c| c == "ca") {
        "ca"
    } else {
        "NULL"
    };
    let columns = format!("id, path, hash, narSize, deriver, sigs, {ca} FROM ValidPaths");
    let mut by_path = conn
        .prepare(&format!("SELECT {columns} WHERE path = ?1"))
        .map_err(sqlite)?;
    let mut by_id = conn
        .prepare(&format!("SELECT {columns} WHERE id = ?1"))
        .map_err(sqlite)?;
    let mut refs = conn
        .prepare("SELECT reference FROM Refs WHERE referrer = ?1")
        .map_err(sqlite)?;

    // Breadth first by row id; references stay ids until every path is known.
    let mut index_of: HashMap<i64, usize> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    for root in roots {
        let row = by_path
            .query_row([root], Row::read)
            .optional()
            .map_err(sqlite)?
            .ok_or_else(|| StoreDbError::NotValid {
                db: db.to_owned(),
                path: root.clone(),
            })?;
        if let Entry::Vacant(e) = index_of.entry(row.id) {
            e.insert(rows.len());
            rows.push(row);
        }
    }
    let mut next = 0;
    while next < rows.len() {
        let ids = refs
            .query_map([rows[next].id], |r| r.get::<_, i64>(0))
            .and_then(|ids| ids.collect::<Result<Vec<_>, _>>())
            .map_err(sqlite)?;
        for &id in &ids {
            if let Entry::Vacant(e) = index_of.entry(id) {
                let row = by_id
                    .query_row([id], Row::read)
                    .optional()
                    .map_err(sqlite)?
                    .ok_or_else(|| StoreDbError::NotNixDb {
                        db: db.to_owned(),
                        reason: format!(
                            "{} refers to row {id}, which is not there",
                            rows[next].path
                        ),
                    })?;
                e.insert(rows.len());
                rows.push(row);
            }
        }
        rows[next].references = ids;
        next += 1;
    }

    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_unstable_by(|&a, &b| rows[a].path.cmp(&rows[b].path));
    // Where each row lands once sorted by path.
    let mut rank = vec![0; rows.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let mut infos: Vec<Option<DbPathInfo>> = Vec::new();
    infos.resize_with(rows.len(), || None);
    for (i, row) in rows.into_iter().enumerate() {
        let nar_size = row
            .nar_size
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| StoreDbError::NotNixDb {
                db: db.to_owned(),
                reason: format!("{} has no NAR size", row.path),
            })?;
        // Sorted by index is sorted by path.
        let mut references: Vec<usize> =
            row.references.iter().map(|id| rank[index_of[id]]).collect();
        references.sort_unstable();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        infos[rank[i]] = Some(DbPathInfo {
            path: row.path,
            nar_hash: row.nar_hash,
            nar_size,
            deriver: non_empty(row.deriver),
            ca: non_empty(row.ca),
            sigs: row
                .sigs
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            references,
        });
    }
    Ok(infos.into_iter().flatten().collect())
}

/// A ValidPaths row, as read.
struct Row {
    id: i64,
    path: String,
    nar_hash: String,
    nar_size: Option<i64>,
    deriver: Option<String>,
    sigs: Option<String>,
    ca: Option<String>,
    /// Row ids.
    references: Vec<i64>,
}

impl Row {
    fn read(r: &rusqlite::Row) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            path: r.get(1)?,
            nar_hash: r.get(2)?,
            nar_size: r.get(3)?,
            deriver: r.get(4)?,
            sigs: r.get(5)?,
            ca: r.get(6)?,
            references: Vec::new(),
        })
    }
}

fn open(db: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if !wal_path(db).exists() {
        // A WAL-mode database without its WAL is whole in its one file, but
        // SQLite would still insist on opening (creating) the WAL; unless it
        // is told the file is immutable. Should a WAL appear meanwhile, the
        // snapshot taken around the read sees it and the read is repeated.
        return Connection::open_with_flags_and_vfs(
            immutable_uri(db),
            flags | OpenFlags::SQLITE_OPEN_URI,
            VFS_NAME,
        );
    }
    let conn = Connection::open_with_flags_and_vfs(db, flags, VFS_NAME)?;
    // Closing must not try to checkpoint the WAL into the database.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    // Before the first read: our file system has no shared memory, and in
    // exclusive mode SQLite keeps the WAL index in heap memory instead.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt.query_map([table], |r| r.get(0))?.collect();
    names
}

fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// `file:<path>?immutable=1`, the path percent-encoded as URIs want.
fn immutable_uri(db: &Path) -> String {
    use std::fmt::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut uri = "file:".to_owned();
    for &b in db.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._~-".contains(&b) {
            uri.push(b as char);
        } else {
            write!(uri, "%{b:02X}").expect("writing to a String");
        }
    }
    uri + "?immutable=1"
}

/// What changes when a writer touches the database or its WAL.
#[derive(PartialEq, Eq)]
struct Snapshot([Option<(u64, u64, i64, i64)>; 2]);

impl Snapshot {
    fn take(db: &Path) -> Result<Self, StoreDbError> {
        let stat = |p: &Path| match fs::metadata(p) {
            Ok(m) => Ok(Some((m.ino(), m.len(), m.mtime(), m.mtime_nsec()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreDbError::Stat {
                db: p.to_owned(),
                source,
            }),
        };
        Ok(Self([stat(db)?, stat(&wal_path(db))?]))
    }
}

/// Registers [`VFS_NAME`] with SQLite, once per process.
fn register_vfs() -> Result<(), StoreDbError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find returns SQLite's own static VFS or
            // null; the copy we register is leaked, so it outlives every
            // connection, and it is registered once.
            unsafe {
                let base = ffi::sqlite3_vfs_find(c"unix-none".as_ptr());
                if base.is_null() {
                    return Err("SQLite has no unix-none VFS".to_owned());
                }
                let mut vfs = *base;
                vfs.zName = VFS_NAME.as_ptr();
                vfs.pNext = std::ptr::null_mut();
                vfs.pAppData = base.cast();
                vfs.xOpen = Some(open_read_only);
                vfs.xDelete = Some(refuse_delete);
                let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0);
                if rc != ffi::SQLITE_OK {
                    return Err(format!("sqlite3_vfs_register failed ({rc})"));
                }
            }
            Ok(())
        })
        .clone()
        .map_err(StoreDbError::Vfs)
}

/// Opens every named file (the database, its WAL) read-only, whatever
/// SQLite asks for: SQLite opens the WAL for writing, creating it if it is
/// missing. Unnamed temporary files are left as asked (with `temp_store =
/// MEMORY` there are none).
unsafe extern "C" fn open_read_only(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: pAppData is the unix-none VFS we copied (register_vfs); its
    // xOpen expects that VFS, whose pAppData selects its lock-free I/O.
    unsafe {
        let base: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
        let flags = if name.is_null() {
            flags
        } else {
            let write = ffi::SQLITE_OPEN_READWRITE
                | ffi::SQLITE_OPEN_CREATE
                | ffi::SQLITE_OPEN_EXCLUSIVE
                | ffi::SQLITE_OPEN_DELETEONCLOSE;
            (flags & !write) | ffi::SQLITE_OPEN_READONLY
        };
        match (*base).xOpen {
            Some(open) => open(base, name, file, flags, out_flags),
            None => ffi::SQLITE_CANTOPEN,
        }
    }
}

unsafe extern "C" fn refuse_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    ffi::SQLITE_IOERR_DELETE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const SCHEMA: &str = "
        PRAGMA journal_mode = WAL;
        PRAGMA wal_autocheckpoint = 0;
        CREATE TABLE ValidPaths (id integer primary key autoincrement not null, path text unique not null,
            hash text not null, registrationTime integer not null, deriver text, narSize integer,
            ultimate integer, sigs text, ca text);
        CREATE TABLE Refs (referrer integer not null, reference integer not null,
            primary key (referrer, reference));
    ";

    fn add(
        conn: &Connection,
        path: &str,
        deriver: Option<&str>,
        sigs: &str,
        ca: Option<&str>,
        refs: &[&str],
    ) {
        conn.execute(
            "INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, sigs, ca) VALUES (?1, ?2, 1, ?3, 120, ?4, ?5)",
            rusqlite::params![path, format!("sha256:{}", "ab".repeat(32)), deriver, sigs, ca],
        )
        .unwrap();
        for r in refs {
            conn.execute(
                "INSERT INTO Refs SELECT a.id, b.id FROM ValidPaths a, ValidPaths b WHERE a.path = ?1 AND b.path = ?2",
                [path, r],
            )
            .unwrap();
        }
    }

    /// Every file of `dir` with its bytes.
    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    /// A database whose later rows exist only in its WAL, as a Nix process
    /// that is still running (or was killed) leaves it: the writer's
    /// connection is never closed, so it never checkpoints.
    fn database_with_rows_in_wal(dir: &Path) -> PathBuf {
        let db = dir.join("db.sqlite");
        let writer = Connection::open(&db).unwrap();
        writer.execute_batch(SCHEMA).unwrap();
        add(
            &writer,
            "/nix/store/c-leaf",
            None,
            "",
            Some("text:sha256:x"),
            &[],
        );
        writer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        add(
            &writer,
            "/nix/store/b-mid",
            Some("/nix/store/d-mid.drv"),
            "k-1:AAAA k-2:BBBB",
            None,
            &["/nix/store/c-leaf"],
        );
        add(
            &writer,
            "/nix/store/a-top",
            None,
            "",
            None,
            &["/nix/store/a-top", "/nix/store/b-mid"],
        );
        add(&writer, "/nix/store/z-other", None, "", None, &[]);
        std::mem::forget(writer);
        db
    }

    #[test]
    fn reads_rows_that_are_only_in_the_wal_and_touches_nothing() {
        let live = tempfile::tempdir().unwrap();
        let db = database_with_rows_in_wal(live.path());
        // The files as they are, without the writer's -shm: nothing to lean on.
        let copy = tempfile::tempdir().unwrap();
        for name in ["db.sqlite", "db.sqlite-wal"] {
            fs::copy(live.path().join(name), copy.path().join(name)).unwrap();
        }
        let before = files(copy.path());
        // What SQLite's immutable mode sees: the rows in the WAL are missing.
        let immutable = Connection::open_with_flags(
            format!(
                "file:{}?immutable=1",
                copy.path().join("db.sqlite").display()
            ),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let in_db: Vec<String> = immutable
            .prepare("SELECT path FROM ValidPaths")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(in_db, ["/nix/store/c-leaf"]);
        drop(immutable);

        let got = read_closure(
            &copy.path().join("db.sqlite"),
            &["/nix/store/a-top".to_owned()],
        )
        .unwrap();
        let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/nix/store/a-top", "/nix/store/b-mid", "/nix/store/c-leaf"]
        );
        assert_eq!(got[0].references, [0, 1]);
        assert_eq!(got[1].deriver.as_deref(), Some("/nix/store/d-mid.drv"));
        assert_eq!(got[1].sigs, ["k-1:AAAA", "k-2:BBBB"]);
        assert_eq!(
            (got[2].ca.as_deref(), got[2].nar_size),
            (Some("text:sha256:x"), 120)
        );
        assert_eq!(got[2].nar_hash, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(
            files(copy.path()),
            before,
            "files beside the database changed"
        );
        let _ = db;
    }

    #[test]
    fn reads_a_database_without_its_wal_in_a_directory_with_odd_characters() {
        let live = tempfile::tempdir().unwrap();
        let db = database_with_rows_in_wal(live.path());
        let checkpointed = Connection::open(&db).unwrap();
        checkpointed
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a dir?with #odd %chars");
        fs::create_dir(&odd).unwrap();
        fs::copy(&db, odd.join("db.sqlite")).unwrap();
        let before = files(&odd);
        let got = read_closure(&odd.join("db.sqlite"), &["/nix/store/b-mid".to_owned()]).unwrap();
        let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["/nix/store/b-mid", "/nix/store/c-leaf"]);
        assert_eq!(files(&odd), before, "files beside the database changed");
    }

    #[test]
    fn an_invalid_root_is_named() {
        let live = tempfile::tempdir().unwrap();
        let db = database_with_rows_in_wal(live.path());
        let err = read_closure(&db, &["/nix/store/q-nope".to_owned()]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nix/store/q-nope is not a valid path"),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_is_one_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        fs::write(
            &db,
            b"not sqlite at all, just text that is long enough to have a header",
        )
        .unwrap();
        let err = read_closure(&db, &["/nix/store/a".to_owned()]).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("{}: ", db.display())),
            "{err}"
        );
        let missing = read_closure(&dir.path().join("none.sqlite"), &[]).unwrap_err();
        assert!(missing.to_string().contains("none.sqlite"), "{missing}");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing created"
        );
    }
}
