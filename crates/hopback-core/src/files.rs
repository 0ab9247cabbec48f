//! The one way hopback writes a file. Logs, the ledger cache and its lock, the ledger's fallback
//! file, post-mortems and exports hold message bodies, operators' names and what was done to the
//! fleet: every one is readable by this user only (0600), and every directory hopback makes is
//! 0700. A file or directory of hopback's that is looser (an earlier version's, a restored
//! backup) is tightened the next time hopback writes there.
//!
//! "Of hopback's": the file it writes, and its data directory (`config::data_dir`) with the
//! directories inside it. A directory the operator named outside it (`--output ~/reports/x.md`)
//! keeps its mode; so does one hopback does not own (another user's, a sticky `/tmp`, the home
//! directory, `/`), even inside a data dir pointed somewhere odd.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file hopback writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory hopback makes or owns.
pub const DIR_MODE: u32 = 0o700;

/// Make `dir` (and missing parents, 0700), and tighten it and its parents up to the data dir
/// when they are hopback's (see the module doc).
pub fn dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    if !dir.is_dir() {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    let data = crate::config::data_dir();
    for d in dir.ancestors().filter(|d| d.starts_with(&data)) {
        tighten_dir(d)?;
    }
    Ok(())
}

/// Tighten directory `d` to 0700 when it is looser and this user's own, unless it is shared by
/// nature (sticky bit), the home directory or the root.
fn tighten_dir(d: &Path) -> std::io::Result<()> {
    let Ok(meta) = std::fs::metadata(d) else {
        return Ok(());
    };
    let mode = meta.mode();
    let shared = mode & 0o1000 != 0
        || d.parent().is_none()
        || std::env::var_os("HOME").is_some_and(|h| Path::new(&h) == d)
        || meta.uid() != rustix::process::geteuid().as_raw();
    if !meta.is_dir() || mode & 0o077 == 0 || shared {
        return Ok(());
    }
    std::fs::set_permissions(d, Permissions::from_mode(DIR_MODE))
}

/// The parent directory of `path`, made (and tightened) as [`dir`] does.
fn parent_of(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(p) => dir(p),
        None => Ok(()),
    }
}

/// Tighten an open file to 0600 if it is looser.
fn tighten(f: &File) -> std::io::Result<()> {
    if f.metadata()?.mode() & 0o077 != 0 {
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Open `path` for appending: created 0600 (its directory as [`dir`] makes it), an existing
/// file tightened.
pub fn append(path: &Path) -> std::io::Result<File> {
    parent_of(path)?;
    let f = options().create(true).append(true).open(path)?;
    tighten(&f)?;
    Ok(f)
}

/// Create or truncate `path` for writing, 0600.
pub fn create(path: &Path) -> std::io::Result<File> {
    parent_of(path)?;
    let f = options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    tighten(&f)?;
    Ok(f)
}

/// Create `path`, 0600; fails if it exists (an export never overwrites one).
pub fn create_new(path: &Path) -> std::io::Result<File> {
    parent_of(path)?;
    options().write(true).create_new(true).open(path)
}

/// Write `bytes` to `path` (created or truncated, 0600) and sync it.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Tighten every file in `dir` whose name starts with `prefix` (a log's rotated copies:
/// `hopback.log.1`, `hopback.log.2026-12-07`): regular files of this user's only.
pub fn tighten_siblings(dir: &Path, prefix: &str) -> std::io::Result<Vec<PathBuf>> {
    let me = rustix::process::geteuid().as_raw();
    let mut done = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        // Not followed: a link is not one of hopback's files.
        let meta = entry.metadata()?;
        if meta.is_file() && meta.uid() == me && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(entry.path(), Permissions::from_mode(FILE_MODE))?;
            done.push(entry.path());
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn files_are_private_and_existing_ones_tightened() {
        let d = tempfile::tempdir().unwrap();
        let made = d.path().join("a/b/out.json");
        write(&made, b"x").unwrap();
        assert_eq!(mode(&made), 0o600);
        assert_eq!(mode(&d.path().join("a/b")), 0o700);
        assert_eq!(mode(&d.path().join("a")), 0o700);
        let open = d.path().join("old.log");
        std::fs::write(&open, b"old").unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o644)).unwrap();
        append(&open).unwrap().write_all(b"new").unwrap();
        assert_eq!(mode(&open), 0o600);
        assert_eq!(std::fs::read(&open).unwrap(), b"oldnew");
        assert!(create_new(&open).is_err(), "never overwrites");
        // A directory outside the data dir keeps its mode.
        std::fs::set_permissions(d.path(), Permissions::from_mode(0o755)).unwrap();
        write(&d.path().join("x.md"), b"x").unwrap();
        assert_eq!(mode(d.path()), 0o755);
        // Rotated logs.
        for n in ["hopback.log.1", "hopback.log.2", "other.txt"] {
            let p = d.path().join(n);
            std::fs::write(&p, b"l").unwrap();
            std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        }
        let done = tighten_siblings(d.path(), "hopback.log").unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(mode(&d.path().join("hopback.log.2")), 0o600);
        assert_eq!(mode(&d.path().join("other.txt")), 0o644);
    }

    #[test]
    fn shared_directories_are_never_tightened() {
        let d = tempfile::tempdir().unwrap();
        let sticky = d.path().join("shared");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, Permissions::from_mode(0o1777)).unwrap();
        tighten_dir(&sticky).unwrap();
        assert_eq!(mode(&sticky), 0o1777);
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o755)).unwrap();
        tighten_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }
}
