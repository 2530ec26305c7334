//! Single-file outputs (eval's --out and --image, the demo's data, report and charts). A file
//! is written to `.NAME.tmp-PID-SEQ` beside its target, fsynced, renamed over the target and
//! the folder fsynced, so at every instant the target is its previous complete content or the
//! new complete file; a kill leaves at most the temporary, which the next write to the same
//! target reclaims (place::reclaim knows the name). Every step goes through fs_step, so the
//! kill-at-every-step tests reach each one.
//!
//! `check_file_target` is what a command calls before any work: an existing target needs
//! overwrite (exit 1, as for output folders), and a path the command reads (its data file, a
//! file of its model folder) is never a target, overwrite or not: compared as canonical paths,
//! so `./data.jsonl`, `dir/../data.jsonl` and a symlink to it are all the same file.

use super::fault::fs_step;
use super::place::{reclaim, split, temp_path};
use crate::checkpoint::sync_dir;
use crate::error::{ModelError, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a command reads, which its outputs must never replace.
pub enum Input<'a> {
    /// A file it reads (the data).
    File(&'a Path),
    /// A folder whose files it reads (a model): no existing file under it is a target.
    Folder(&'a Path),
}

/// The canonical form of `target`, which may not exist yet: its folder canonicalised, its name
/// kept (a target that exists, a symlink included, is resolved whole).
pub fn canonical_target(target: &Path) -> Option<PathBuf> {
    if let Ok(p) = target.canonicalize() {
        return Some(p);
    }
    let (parent, name) = split(target).ok()?;
    Some(parent.canonicalize().ok()?.join(name))
}

/// Refuses, before any work, a target that exists without `overwrite`, that is a folder, or that
/// is one of the command's inputs (with or without `overwrite`).
pub fn check_file_target(target: &Path, overwrite: bool, inputs: &[Input]) -> Result<()> {
    if let Some(t) = canonical_target(target) {
        for input in inputs {
            let clash = match input {
                Input::File(f) => f.canonicalize().is_ok_and(|f| f == t),
                Input::Folder(d) => d.canonicalize().is_ok_and(|d| t.starts_with(&d) && t.exists()),
            };
            if clash {
                let what = match input {
                    Input::File(f) => format!("is the input {}", f.display()),
                    Input::Folder(d) => format!("is a file of the input model folder {}", d.display()),
                };
                return Err(ModelError::file(
                    target,
                    format!(
                        "{what}; refusing to write over it (even with --overwrite): choose another output"
                    ),
                ));
            }
        }
    }
    match fs::metadata(target) {
        Ok(m) if m.is_dir() => Err(ModelError::file(target, "is a folder; give a file name")),
        Ok(_) if !overwrite => {
            Err(ModelError::file(target, "already exists (pass --overwrite to replace it)"))
        }
        _ => Ok(()),
    }
}

/// Removes the temporary if the write did not get to put it in place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Writes `bytes` to `target` atomically (see the file header). Refuses an existing target
/// unless `overwrite`; leftovers of killed writes beside the target are reclaimed first.
pub fn write_file(target: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    let (parent, _) = split(target)?;
    reclaim(target)?;
    check_file_target(target, overwrite, &[])?;
    let tmp = temp_path(target, "tmp")?;
    let mut guard = TempFile(Some(tmp.clone()));
    fs_step("create file", &tmp);
    // Errors name the target, which is what the user asked for; the temporary is a detail.
    let fail = |what: &str, e: std::io::Error| {
        ModelError::file(target, format!("cannot write: {what} {}: {e}", tmp.display()))
    };
    let mut f = File::create(&tmp).map_err(|e| fail("cannot create", e))?;
    f.write_all(bytes).map_err(|e| fail("cannot write", e))?;
    fs_step("sync file", &tmp);
    f.sync_all().map_err(|e| fail("cannot sync", e))?;
    drop(f);
    fs_step("rename into place", target);
    fs::rename(&tmp, target).map_err(|e| ModelError::io(target, "cannot move the new file into place", e))?;
    guard.0 = None;
    sync_dir(&parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_only_with_overwrite_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        write_file(&target, b"one", false).unwrap();
        let e = write_file(&target, b"two", false).unwrap_err().to_string();
        assert!(e.contains("already exists") && e.contains("--overwrite"), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"one");
        write_file(&target, b"two", true).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "only the target remains");
    }

    #[test]
    fn inputs_are_never_targets_however_they_are_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.jsonl");
        let model = dir.path().join("model");
        fs::create_dir(&model).unwrap();
        fs::write(&data, "x").unwrap();
        fs::write(model.join("config.json"), "{}").unwrap();
        let inputs = [Input::File(&data), Input::Folder(&model)];
        let spelled = dir.path().join("model/../data.jsonl");
        for t in [data.clone(), spelled, model.join("config.json"), model.join("./config.json")] {
            let e = check_file_target(&t, true, &inputs).unwrap_err().to_string();
            assert!(e.contains("refusing to write over it"), "{}: {e}", t.display());
        }
        #[cfg(unix)]
        {
            let link = dir.path().join("link.jsonl");
            std::os::unix::fs::symlink(&data, &link).unwrap();
            assert!(check_file_target(&link, true, &inputs).is_err(), "a symlink to the data");
        }
        // A new file beside the inputs, or in the model folder, is fine.
        check_file_target(&dir.path().join("eval.jsonl"), false, &inputs).unwrap();
        check_file_target(&model.join("eval.jsonl"), false, &inputs).unwrap();
        assert!(check_file_target(&model, true, &[]).unwrap_err().to_string().contains("is a folder"));
    }
}
