//! Running ranks under `mpirun` from tests, and comparing the models they write: what the
//! data parallel tests (tests/tests/dist_*.rs) share.

use crate::cli::{solar_train_path, Run};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The environment every mpirun here gets: root allowed (CI runs as root), more ranks than
/// cores allowed, idle ranks yielding the CPU, shared memory without ptrace-based copies
/// (refused in containers).
pub const MPI_ENV: [(&str, &str); 5] = [
    ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
    ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
    ("OMPI_MCA_mpi_yield_when_idle", "1"),
    ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
    ("OMPI_MCA_rmaps_base_oversubscribe", "1"),
];

pub fn mpirun_command(np: usize, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--bind-to", "none", "-np", &np.to_string()]).arg(solar_train_path()).args(args);
    c.envs(MPI_ENV.iter().copied()).envs(env.iter().copied());
    c
}

pub fn mpirun(np: usize, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = mpirun_command(np, args, env).output().expect("mpirun runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether mpirun and an MPI-enabled solar-train are here; SOLAR_REQUIRE_MPI=1 makes their
/// absence a failure.
pub fn mpi_ready() -> bool {
    let required = std::env::var("SOLAR_REQUIRE_MPI").is_ok_and(|v| v == "1");
    let found = Command::new("mpirun").arg("--version").output().is_ok_and(|o| o.status.success());
    let why = if !found {
        Some("mpirun not found (install Open MPI: openmpi-bin libopenmpi-dev)".to_string())
    } else {
        let probe = mpirun(
            1,
            &["pretrain", "--model", "/nonexistent", "--data", "x", "--out", "/nonexistent/o"],
            &[],
        );
        probe
            .stderr
            .contains("built without MPI")
            .then(|| format!("solar-train has no MPI: {}", probe.stderr))
    };
    match why {
        None => true,
        Some(w) if required => panic!("SOLAR_REQUIRE_MPI=1 but {w}"),
        Some(w) => {
            eprintln!("skipped: {w}");
            false
        }
    }
}

pub fn ok(run: &Run) {
    assert_eq!(run.code, Some(0), "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

pub fn weights(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("a finished model");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
            let data =
                v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (name, data)
        })
        .collect()
}

pub fn assert_same_bits(a: &Path, b: &Path) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (name, x) in &wa {
        let y = &wb[name];
        let differ = x.iter().zip(y).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
        assert_eq!(
            differ,
            0,
            "{name}: {differ} of {} elements differ between {} and {}",
            x.len(),
            a.display(),
            b.display()
        );
    }
}

/// Every tensor within `tol` of its largest magnitude, and the runs' losses within `tol`.
pub fn assert_close(a: &Path, b: &Path, tol: f64) {
    let (wa, wb) = (weights(a), weights(b));
    for (name, x) in &wa {
        let y = &wb[name];
        let scale = x.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
        let worst = x.iter().zip(y).map(|(p, q)| (*p as f64 - *q as f64).abs()).fold(0f64, f64::max);
        assert!(
            worst <= tol * scale,
            "{name}: differs by {worst:e} (largest value {scale:e}) between {} and {}",
            a.display(),
            b.display()
        );
    }
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len());
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        assert!((x - y).abs() <= tol * x.abs(), "step {}: loss {x} vs {y}", i + 1);
    }
}

pub fn losses(out: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(Value::as_f64))
        .collect()
}
