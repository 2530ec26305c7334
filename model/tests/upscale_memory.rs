//! Upscaling streams: its peak resident memory stays far below the model's size. The parent test
//! writes a ~530 MB f32 model (streamed too), then re-runs this test binary with a filter and
//! an environment variable so that a fresh child process does only the upscale and prints its
//! VmHWM (peak resident set) from /proc/self/status; a measurement taken in the parent would
//! include the parent's own allocations. For contrast the child also reports what reading the
//! same files through a memory map costs: mapped pages count as resident, which is why the
//! checkpoint reader uses positioned reads.
#![cfg(target_os = "linux")]

mod checkpoint_util;

use checkpoint_util::tiny;
use solar_model::checkpoint::{write_checkpoint, Checkpoint, PlannedTensor, SafeDType, WriteOptions};
use solar_model::dus::{upscale, LayerSpec};
use solar_model::names::{layer_name, parameter_shapes, LM_HEAD};
use solar_model::LlamaConfig;
use std::path::Path;
use std::process::Command;

/// Set in the child: "IN_DIR|OUT_DIR|MODE" with MODE `upscale` or `mmap`.
const CHILD_ENV: &str = "SOLAR_UPSCALE_MEMORY_CHILD";

/// 4 layers, hidden 1024, ffn 4096, vocab 32000, untied, f32: 530,609,152 bytes of tensors;
/// the largest (embeddings, lm_head: [32000, 1024]) is 131 MB, a quarter of the model.
fn big_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 32000,
        hidden_size: 1024,
        intermediate_size: 4096,
        num_attention_heads: 8,
        num_key_value_heads: 8,
        head_dim: 128,
        ..tiny(4, false)
    }
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The child's work; a no-op (and a pass) in an ordinary test run.
#[test]
fn upscale_memory_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let (input, out, mode) = (Path::new(parts[0]), Path::new(parts[1]), parts[2]);
    match mode {
        "upscale" => {
            upscale(input, out, &LayerSpec::Remove(1), &WriteOptions::default()).unwrap();
        }
        _ => {
            // Read every byte of every file through a memory map, as an mmap-based copy would.
            let mut sum = 0u64;
            for entry in std::fs::read_dir(input).unwrap() {
                let file = std::fs::File::open(entry.unwrap().path()).unwrap();
                let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
                sum = map.iter().step_by(4096).fold(sum, |s, &b| s.wrapping_add(b as u64));
            }
            println!("checksum {sum}");
        }
    }
    // On a line of its own: libtest prints the test name before a test's output.
    println!("\nVMHWM_KB={}", vm_hwm_kb());
}

fn run_child(input: &Path, out: &Path, mode: &str) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args(["--exact", "upscale_memory_child", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, format!("{}|{}|{mode}", input.display(), out.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("VMHWM_KB="))
        .unwrap_or_else(|| panic!("no VmHWM in: {stdout}"));
    line.trim().parse::<u64>().unwrap() * 1024
}

/// Cheap deterministic values, different in every tensor.
fn fill_values(seed: u64, out: &mut [f32]) -> u64 {
    let mut x = seed | 1;
    for v in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
    }
    x
}

#[test]
fn upscale_peak_memory_is_far_below_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = big_config();
    let base = tmp.path().join("base");
    let plan: Vec<PlannedTensor> = parameter_shapes(&cfg)
        .into_iter()
        .map(|(name, shape)| PlannedTensor { name, dtype: SafeDType::F32, shape })
        .collect();
    let mut piece = vec![0f32; 1 << 20];
    let report = write_checkpoint(&base, &cfg, &plan, &WriteOptions::default(), None, |i, sink| {
        let mut left: usize = sink.shape().iter().product();
        let mut seed = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        while left > 0 {
            let n = left.min(piece.len());
            seed = fill_values(seed, &mut piece[..n]);
            sink.write_f32(&piece[..n])?;
            left -= n;
        }
        Ok(())
    })
    .unwrap();
    let model_bytes = report.total_size;
    assert!(model_bytes >= 500_000_000, "{model_bytes}");

    let out = tmp.path().join("up");
    let started = std::time::Instant::now();
    let peak = run_child(&base, &out, "upscale");
    let secs = started.elapsed().as_secs_f64();
    let mmap_peak = run_child(&base, &out, "mmap");
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "upscale of a {:.0} MB f32 model (4 -> 6 layers, largest tensor {:.0} MB): child VmHWM {:.1} MB \
         ({:.1}% of the model) in {secs:.1} s; reading the same files through mmap: VmHWM {:.1} MB",
        mb(model_bytes),
        mb(32000 * 1024 * 4),
        mb(peak),
        100.0 * peak as f64 / model_bytes as f64,
        mb(mmap_peak),
    );
    assert!(peak < model_bytes / 4, "peak {peak} bytes, model {model_bytes} bytes");

    // Spot checks: the output is the base re-layered as [0, 1, 2] ++ [1, 2, 3].
    let (b, o) = (Checkpoint::open(&base).unwrap(), Checkpoint::open(&out).unwrap());
    o.validate().unwrap();
    assert_eq!(o.config().num_hidden_layers, 6);
    for (new, src) in [(5, 3), (4, 2), (1, 1)] {
        let name = |l| layer_name(l, "mlp.down_proj.weight");
        assert!(o.read_bytes(&name(new)).unwrap() == b.read_bytes(&name(src)).unwrap(), "layer {new}");
    }
    assert!(o.read_bytes(LM_HEAD).unwrap() == b.read_bytes(LM_HEAD).unwrap());
}
