//! Putting a finished folder in place, and reclaiming what dead runs left beside it.
//!
//! Temporaries live beside the target as `.NAME.KIND-PID-SEQ` (KIND: `tmp` a folder being
//! built, `old` the previous content moved aside, `run` a trainer's working folder), so they
//! are on the target's filesystem (renames stay atomic) and say which process owns them.
//!
//! Replacing an existing folder uses renameat2(RENAME_EXCHANGE): one atomic step, so at every
//! instant the target is the old complete folder or the new one. Where the filesystem cannot
//! exchange, the old folder is renamed to `.NAME.old-...` and the new one renamed in; a run
//! killed between those two renames leaves no target but a complete backup, which `reclaim`
//! (called by every later save to the same place) renames back.

use super::fault::fs_step;
use crate::error::{ModelError, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The parent folder and the file name of an output path.
pub fn split(target: &Path) -> Result<(PathBuf, String)> {
    let Some(name) = target.file_name() else {
        return Err(ModelError::file(target, "not a usable output folder name"));
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string_lossy().into_owned()))
}

/// A fresh temporary path of `kind` beside `target`, unique within this process.
pub fn temp_path(target: &Path, kind: &str) -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let (parent, name) = split(target)?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    Ok(parent.join(format!(".{name}.{kind}-{}-{seq}", std::process::id())))
}

/// The name, kind and owner pid of a temporary, if `entry` is one.
fn parse_temp(entry: &str) -> Option<(&str, &str, u32)> {
    let (name, tail) = entry.strip_prefix('.')?.rsplit_once('.')?;
    let (kind, owner) = tail.split_once('-')?;
    let pid = owner.split('-').next()?.parse().ok()?;
    KINDS.contains(&kind).then_some((name, kind, pid))
}

/// `tmp` a folder being built, `old` previous content moved aside (restored if its target is
/// missing), `run` a trainer's working folder, `trash` something being removed.
const KINDS: [&str; 4] = ["tmp", "old", "run", "trash"];

/// Whether a process with this pid exists (EPERM: it exists, just not ours to signal).
pub fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    true
}

/// Reclaims the temporaries of dead processes beside `target`: a backup whose target is
/// missing goes back into place; every other leftover is removed. Returns how many were
/// handled. Temporaries of live processes are never touched.
pub fn reclaim(target: &Path) -> Result<usize> {
    let (parent, name) = split(target)?;
    reclaim_where(&parent, &|n| n == name)
}

/// `reclaim` for every name in `dir` (a trainer's checkpoints folder).
pub fn reclaim_in(dir: &Path) -> Result<usize> {
    reclaim_where(dir, &|_| true)
}

fn reclaim_where(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> Result<usize> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(0) };
    let mut found: Vec<(String, String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let entry = e.file_name().to_string_lossy().into_owned();
            let (name, kind, pid) = parse_temp(&entry)?;
            (wanted(name) && !alive(pid)).then(|| (name.to_string(), kind.to_string(), e.path()))
        })
        .collect();
    // Backups first: one may have to become its target again.
    found.sort_by_key(|(_, kind, _)| kind != "old");
    for (name, kind, path) in &found {
        let target = dir.join(name);
        if kind == "old" && fs::symlink_metadata(&target).is_err() {
            fs::rename(path, &target)
                .map_err(|e| ModelError::io(path, "cannot restore a backup left by a killed run", e))?;
            eprintln!(
                "note: {}: restored the previous content a killed run had moved aside",
                target.display()
            );
            continue;
        }
        fs::remove_dir_all(path)
            .or_else(|_| fs::remove_file(path))
            .map_err(|e| ModelError::io(path, "cannot remove a temporary folder left by a dead run", e))?;
    }
    if !found.is_empty() {
        eprintln!("note: reclaimed {} temporary folder(s) of dead runs in {}", found.len(), dir.display());
    }
    Ok(found.len())
}

/// Makes the complete folder `new` the target, replacing an existing target in one atomic
/// exchange where the filesystem allows; the old content is then removed.
pub fn put_in_place(new: &Path, target: &Path) -> Result<()> {
    replace(new, target, true)
}

fn replace(new: &Path, target: &Path, try_exchange: bool) -> Result<()> {
    if fs::symlink_metadata(target).is_err() {
        fs_step("rename into place", target);
        return fs::rename(new, target)
            .map_err(|e| ModelError::io(target, "cannot move the new folder into place", e));
    }
    fs_step("exchange with the old folder", target);
    let exchanged =
        if try_exchange { exchange(new, target) } else { Err(std::io::ErrorKind::Unsupported.into()) };
    let displaced = match exchanged {
        // `new` now names the old content.
        Ok(()) => new.to_path_buf(),
        Err(_) => {
            let old = temp_path(target, "old")?;
            fs_step("move the old folder aside", target);
            fs::rename(target, &old)
                .map_err(|e| ModelError::io(target, "cannot move the old folder aside", e))?;
            fs_step("rename into place", target);
            if let Err(e) = fs::rename(new, target) {
                // Better the old content than none.
                let _ = fs::rename(&old, target);
                return Err(ModelError::io(target, "cannot move the new folder into place", e));
            }
            old
        }
    };
    fs_step("remove the old folder", &displaced);
    fs::remove_dir_all(&displaced)
        .map_err(|e| ModelError::io(&displaced, "new content in place; cannot remove the old one", e))
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (cstr(a)?, cstr(b)?);
    // SAFETY: two valid NUL-terminated paths relative to the working folder.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Hard-links (copying where links are not possible) every file under `from` into `to`,
/// recreating folders, except top-level entries for which `skip(name)` holds. Links cost no
/// space and leave `from` intact, so a folder can be rebuilt beside itself and swapped in.
pub fn link_tree(from: &Path, to: &Path, skip: &dyn Fn(&str) -> bool) -> Result<()> {
    let entries = fs::read_dir(from).map_err(|e| ModelError::io(from, "cannot list", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io(from, "cannot list", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if skip(&name) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let meta = fs::symlink_metadata(&src).map_err(|e| ModelError::io(&src, "cannot read", e))?;
        if meta.is_dir() {
            fs_step("create folder", &dst);
            fs::create_dir(&dst).map_err(|e| ModelError::io(&dst, "cannot create", e))?;
            link_tree(&src, &dst, &|_| false)?;
        } else {
            fs_step("link file", &dst);
            if fs::hard_link(&src, &dst).is_err() {
                fs::copy(&src, &dst).map_err(|e| ModelError::io(&src, "cannot copy", e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_backup_of_a_dead_run_goes_back_when_the_target_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model");
        let pid = dead_pid();
        let backup = dir.path().join(format!(".model.old-{pid}-0"));
        fs::create_dir(&backup).unwrap();
        fs::write(backup.join("config.json"), "{}").unwrap();
        let tmp = dir.path().join(format!(".model.tmp-{pid}-1"));
        fs::create_dir(&tmp).unwrap();
        assert_eq!(reclaim(&target).unwrap(), 2);
        assert_eq!(fs::read_to_string(target.join("config.json")).unwrap(), "{}");
        assert!(!backup.exists() && !tmp.exists());
    }

    #[test]
    fn temporaries_of_live_processes_and_other_names_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model");
        let mine = dir.path().join(format!(".model.tmp-{}-0", std::process::id()));
        let other = dir.path().join(format!(".model2.tmp-{}-0", dead_pid()));
        fs::create_dir(&mine).unwrap();
        fs::create_dir(&other).unwrap();
        assert_eq!(reclaim(&target).unwrap(), 0);
        assert!(mine.exists() && other.exists());
    }

    #[test]
    fn replacing_keeps_one_complete_folder_with_or_without_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("a"), "old").unwrap();
        for round in 0..2 {
            let new = temp_path(&target, "tmp").unwrap();
            fs::create_dir(&new).unwrap();
            fs::write(new.join("a"), format!("new{round}")).unwrap();
            // The second round takes the fallback path that moves the old folder aside.
            replace(&new, &target, round == 0).unwrap();
            assert_eq!(fs::read_to_string(target.join("a")).unwrap(), format!("new{round}"));
            let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(left.len(), 1, "only the target remains");
        }
    }
}
