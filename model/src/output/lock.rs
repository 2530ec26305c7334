//! One writer per output folder. A run that writes OUT holds an exclusive flock on
//! `.NAME.lock` beside OUT (beside, not inside: OUT itself is swapped out by renames) for its
//! whole life; the file holds the holder's pid so a refused run can name it. The kernel drops a
//! flock when its holder dies, however it dies, so a lock left by a dead run is simply taken
//! over. The holder removes the file when done; a run that opened it just before that removal
//! would lock a file no longer in the folder, so after locking it checks that the path still
//! names the file it locked, and tries again if not.

use crate::error::{ModelError, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub struct OutputLock {
    path: PathBuf,
    // Held open: closing it releases the lock.
    _file: File,
}

/// `parent/.NAME.lock` for an output folder `parent/NAME`.
pub fn lock_path(out: &Path) -> Result<PathBuf> {
    let (parent, name) = super::place::split(out)?;
    Ok(parent.join(format!(".{name}.lock")))
}

impl OutputLock {
    /// Takes the lock for `out`, creating its parent folder if needed; refuses (naming the
    /// holder's pid) while another live process holds it.
    pub fn acquire(out: &Path) -> Result<OutputLock> {
        let path = lock_path(out)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ModelError::io(parent, "cannot create the output's parent folder", e))?;
        }
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| ModelError::io(&path, "cannot open the output lock", e))?;
            if !try_flock(&file).map_err(|e| ModelError::io(&path, "cannot lock", e))? {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    pid => format!("process {pid}"),
                };
                return Err(ModelError::file(
                    out,
                    format!(
                        "is being written by another run ({holder}, lock {}); wait for it to finish \
                         or choose another output",
                        path.display()
                    ),
                ));
            }
            if !still_named(&file, &path) {
                continue;
            }
            let pid = std::process::id().to_string();
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(pid.as_bytes()))
                .map_err(|e| ModelError::io(&path, "cannot write the output lock", e))?;
            return Ok(OutputLock { path, _file: file });
        }
        Err(ModelError::file(&path, "the output lock keeps changing hands; try again"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked; the lock itself goes when the file is closed.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Ok(true) when we now hold the exclusive lock, Ok(false) when another process does.
#[cfg(unix)]
fn try_flock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(unix))]
fn try_flock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(unix)]
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_named(_file: &File, _path: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_output_is_refused_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = OutputLock::acquire(&out).unwrap();
        assert_eq!(std::fs::read_to_string(first.path()).unwrap(), std::process::id().to_string());
        // flock locks belong to open files, so a second open in this process conflicts too.
        let e = OutputLock::acquire(&out).err().expect("a second writer must be refused").to_string();
        assert!(e.contains(&format!("process {}", std::process::id())), "{e}");
        let path = first.path().to_path_buf();
        drop(first);
        assert!(!path.exists(), "the lock file is removed by its holder");
        let _again = OutputLock::acquire(&out).unwrap();
    }

    #[test]
    fn a_stale_lock_file_without_a_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::write(lock_path(&out).unwrap(), "999999999").unwrap();
        let lock = OutputLock::acquire(&out).unwrap();
        assert_eq!(std::fs::read_to_string(lock.path()).unwrap(), std::process::id().to_string());
    }
}
