//! Folder snapshots for the hostile tests: a folder's files as relative path -> bytes, so a
//! test can say "this folder is exactly the old one or exactly the new one" after every kill,
//! and find hidden temporaries a run left behind.

use std::collections::BTreeMap;
use std::path::Path;

/// Every file under `dir` (relative path -> content); empty for a missing folder.
/// metrics.jsonl holds timings, so only its step numbers are kept: they are what a kill can
/// corrupt, and a timing is never the same twice.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    walk(dir, "", &mut files);
    files
}

fn walk(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let entry = entry.expect("list a folder");
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().expect("file type").is_dir() {
            files.insert(format!("{name}/"), Vec::new());
            walk(&entry.path(), &format!("{name}/"), files);
        } else {
            let bytes = std::fs::read(entry.path()).expect("read a file");
            let bytes = if name.ends_with("metrics.jsonl") { metric_steps(&bytes) } else { bytes };
            files.insert(name, bytes);
        }
    }
}

fn metric_steps(bytes: &[u8]) -> Vec<u8> {
    let steps: Vec<String> = String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) => v["step"].to_string(),
            Err(_) => format!("unparsable line: {l}"),
        })
        .collect();
    steps.join(",").into_bytes()
}

/// The names in `tree` (for messages: the contents are too long to print).
pub fn names(tree: &BTreeMap<String, Vec<u8>>) -> Vec<&str> {
    tree.keys().map(String::as_str).collect()
}

/// Hidden entries (temporaries, locks) directly in `dir`.
pub fn hidden(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    found.sort();
    found
}

/// Copies a folder tree (for restoring a scenario's starting state).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a folder");
    for entry in std::fs::read_dir(from).expect("list a folder") {
        let entry = entry.expect("list a folder");
        let dst = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).expect("copy a file");
        }
    }
}
