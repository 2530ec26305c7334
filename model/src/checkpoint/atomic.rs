//! Atomic output folders. A model is written into `.NAME.tmp-PID-SEQ` beside the target, every
//! file and the folder are fsynced, and only then is it put in place (output::place: one atomic
//! exchange when replacing), so a crash, a kill or an error never leaves a half-written model
//! where a complete one is expected. Dropping a staging folder that was not committed removes
//! it, which covers errors and panics alike; what a killed run left is reclaimed by the next
//! save to the same place. Every filesystem step goes through output::fs_step, so the
//! kill-at-every-step tests can stop a save anywhere.

use crate::error::{ModelError, Result};
use crate::output::fs_step;
use crate::output::place::{put_in_place, reclaim, split, temp_path};
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
    /// work is done, so a long run does not fail at its very end. Leftovers of dead runs beside
    /// the target are reclaimed first (a backup of a killed swap goes back into place).
    pub fn create(target: &Path, overwrite: bool) -> Result<StagingDir> {
        let (parent, _) = split(target)?;
        fs::create_dir_all(&parent)
            .map_err(|e| ModelError::io(&parent, "cannot create the output's parent folder", e))?;
        reclaim(target)?;
        if let Ok(meta) = fs::symlink_metadata(target) {
            if !overwrite {
                return Err(ModelError::file(target, "already exists (pass --overwrite to replace it)"));
            }
            if !meta.is_dir() {
                return Err(ModelError::file(target, "exists and is not a folder; refusing to replace it"));
            }
        }
        let tmp = temp_path(target, "tmp")?;
        fs_step("create the staging folder", &tmp);
        fs::create_dir(&tmp).map_err(|e| ModelError::io(&tmp, "cannot create the temporary folder", e))?;
        Ok(StagingDir { target: target.to_path_buf(), tmp, parent, committed: false })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Makes the staged folder the target, replacing an existing one (overwrite) only now that
    /// the new content is complete and synced.
    pub fn commit(mut self) -> Result<()> {
        sync_dir(&self.tmp)?;
        // On failure the staging path holds either the new content (not placed) or the old
        // (exchanged, not yet removed): either way dropping it is right.
        put_in_place(&self.tmp, &self.target)?;
        self.committed = true;
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
        fs_step("sync folder", dir);
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
    fs_step("create file", path);
    let mut f = File::create(path).map_err(|e| ModelError::io(path, "cannot create", e))?;
    f.write_all(bytes).map_err(|e| ModelError::io(path, "cannot write", e))?;
    fs_step("sync file", path);
    f.sync_all().map_err(|e| ModelError::io(path, "cannot sync", e))
}

/// Copies each COPY_THROUGH file present in `from` into `to`, synced; returns the names copied.
pub(crate) fn copy_through(from: &Path, to: &Path) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for name in COPY_THROUGH {
        let src = from.join(name);
        if !src.is_file() {
            continue;
        }
        let dst = to.join(name);
        // Never copy onto an existing name: it may be a hard link to `src` itself, which
        // fs::copy would truncate before reading.
        let _ = fs::remove_file(&dst);
        fs_step("copy file", &dst);
        fs::copy(&src, &dst).map_err(|e| ModelError::io(&src, "cannot copy", e))?;
        fs_step("sync file", &dst);
        let f = File::open(&dst).map_err(|e| ModelError::io(&dst, "cannot open", e))?;
        f.sync_all().map_err(|e| ModelError::io(&dst, "cannot sync", e))?;
        copied.push(name.to_string());
    }
    Ok(copied)
}
