//! Atomic output folders. A model is written into `.NAME.tmp-PID` beside the target, every file
//! and the folder are fsynced, and only then is it renamed into place, so a crash or an error
//! never leaves a half-written model where a complete one is expected. Dropping a staging folder
//! that was not committed removes it, which covers errors and panics alike.

use crate::error::{ModelError, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Files that travel with a model but are not ours to interpret: copied byte for byte.
pub const COPY_THROUGH: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
];

pub struct StagingDir {
    target: PathBuf,
    tmp: PathBuf,
    parent: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Creates the staging folder. Refuses an existing target unless `overwrite`, before any
    /// work is done, so a long run does not fail at its very end.
    pub fn create(target: &Path, overwrite: bool) -> Result<StagingDir> {
        let Some(name) = target.file_name() else {
            return Err(ModelError::file(target, "not a usable output folder name"));
        };
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent)
            .map_err(|e| ModelError::io(&parent, "cannot create the output's parent folder", e))?;
        if let Ok(meta) = fs::symlink_metadata(target) {
            if !overwrite {
                return Err(ModelError::file(target, "already exists (allow overwriting to replace it)"));
            }
            if !meta.is_dir() {
                return Err(ModelError::file(target, "exists and is not a folder; refusing to replace it"));
            }
        }
        let tmp = parent.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        if tmp.exists() {
            // Left by an earlier process with our pid that was killed: never ours to keep.
            fs::remove_dir_all(&tmp)
                .map_err(|e| ModelError::io(&tmp, "cannot remove a stale temporary folder", e))?;
        }
        fs::create_dir(&tmp).map_err(|e| ModelError::io(&tmp, "cannot create the temporary folder", e))?;
        Ok(StagingDir { target: target.to_path_buf(), tmp, parent, committed: false })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Makes the staged folder the target. With an existing target (overwrite), the old one is
    /// renamed aside, the new one renamed in, and the old one removed.
    pub fn commit(mut self) -> Result<()> {
        sync_dir(&self.tmp)?;
        if fs::symlink_metadata(&self.target).is_ok() {
            let name = self.target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let old = self.parent.join(format!(".{name}.old-{}", std::process::id()));
            fs::rename(&self.target, &old)
                .map_err(|e| ModelError::io(&self.target, "cannot move the old folder aside", e))?;
            if let Err(e) = fs::rename(&self.tmp, &self.target) {
                // Put the old model back: better the old one than none.
                let _ = fs::rename(&old, &self.target);
                return Err(ModelError::io(&self.target, "cannot move the new folder into place", e));
            }
            self.committed = true;
            fs::remove_dir_all(&old)
                .map_err(|e| ModelError::io(&old, "new model in place; cannot remove the old one", e))?;
        } else {
            fs::rename(&self.tmp, &self.target)
                .map_err(|e| ModelError::io(&self.target, "cannot move the new folder into place", e))?;
            self.committed = true;
        }
        sync_dir(&self.parent)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// fsync on a folder makes the names in it (our renames and new files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let f = File::open(dir).map_err(|e| ModelError::io(dir, "cannot open folder to sync", e))?;
        f.sync_all().map_err(|e| ModelError::io(dir, "cannot sync folder", e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes a small file and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| ModelError::io(path, "cannot create", e))?;
    f.write_all(bytes).map_err(|e| ModelError::io(path, "cannot write", e))?;
    f.sync_all().map_err(|e| ModelError::io(path, "cannot sync", e))
}

/// Copies each COPY_THROUGH file present in `from` into `to`, synced; returns the names copied.
pub(super) fn copy_through(from: &Path, to: &Path) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for name in COPY_THROUGH {
        let src = from.join(name);
        if !src.is_file() {
            continue;
        }
        let dst = to.join(name);
        fs::copy(&src, &dst).map_err(|e| ModelError::io(&src, "cannot copy", e))?;
        let f = File::open(&dst).map_err(|e| ModelError::io(&dst, "cannot open", e))?;
        f.sync_all().map_err(|e| ModelError::io(&dst, "cannot sync", e))?;
        copied.push(name.to_string());
    }
    Ok(copied)
}
