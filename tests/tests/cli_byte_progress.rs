//! Byte progress of `upscale` and `merge` off a terminal (CI, a pipe), as a script sees it:
//! stdout stays empty, and stderr holds the command's one summary line, which now ends with the
//! bytes written (the output's tensor data, read back from its files) and the rate. The bar
//! itself is drawn only on a terminal.

use solar_model::checkpoint::Checkpoint;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, Run};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_byte_progress_{name}"))
}

/// indicatif's HumanBytes for sizes between 1 KiB and 1 MiB, as the summary prints them.
fn kib(bytes: u64) -> String {
    assert!((1024..1 << 20).contains(&bytes), "{bytes} bytes: pick a fixture in KiB");
    format!("{:.2} KiB in ", bytes as f64 / 1024.0)
}

/// Stdout empty; stderr one line starting with `head` and naming the output's bytes.
fn one_summary_line(run: &Run, head: &str, out: &Path) {
    ok(run);
    assert_eq!(run.stdout, "", "nothing new on stdout");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line on stderr: {:?}", run.stderr);
    assert!(lines[0].starts_with(head), "{}", lines[0]);
    let bytes = Checkpoint::open(out).unwrap().total_size();
    assert!(lines[0].contains(&kib(bytes)) && lines[0].ends_with("/s)"), "{bytes} bytes: {}", lines[0]);
}

#[test]
fn upscale_and_merge_off_a_terminal_print_one_line_with_the_bytes() {
    let d = scratch("run");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf/upscale/base");
    let up = d.join("up");
    let run = solar_train(&["upscale", "--model", s(&base), "--out", s(&up), "--remove", "1"]);
    one_summary_line(&run, "upscaled 4 layers to 6", &up);

    // A second model of the same shape: the base's files under another name.
    let copy = d.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(&base).unwrap().flatten() {
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let merged = d.join("merged");
    let run =
        solar_train(&["merge", "--method", "linear", "--models", s(&base), s(&copy), "--out", s(&merged)]);
    one_summary_line(&run, "merged 2 models (linear)", &merged);
}
