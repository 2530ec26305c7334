//! Byte progress of checkpoint writes and loads (checkpoint/progress.rs): the callback starts at
//! (0, total), only grows, and ends at exactly the bytes of tensor data, the sum of every
//! tensor's elements times its stored width, counted here from shapes, not from the writer.
//! Held for a plain write converting f32 to bf16, a sharded up-scale, and a full load.

mod checkpoint_util;

use checkpoint_util::*;
use solar_engine::DType;
use solar_model::checkpoint::*;
use solar_model::dus::{upscale, LayerSpec};
use std::sync::{Arc, Mutex};

/// An OnBytes that records every call.
fn recorder() -> (OnBytes, Arc<Mutex<Vec<(u64, u64)>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    (OnBytes::new(move |done, total| c.lock().unwrap().push((done, total))), calls)
}

/// Asserts the calls run from (0, expected) up to (expected, expected) without going back.
fn assert_counts(calls: &[(u64, u64)], expected: u64) {
    assert_eq!(calls.first(), Some(&(0, expected)), "starts at zero of the total");
    assert_eq!(calls.last(), Some(&(expected, expected)), "ends at the total");
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 == w[1].1), "{calls:?}");
    assert!(calls.len() > 2, "told along the way, not only at the ends: {calls:?}");
}

fn elems(shape: &[usize]) -> u64 {
    shape.iter().product::<usize>() as u64
}

#[test]
fn a_write_counts_the_output_bytes_of_every_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(3, false);
    let model = random_model(&cfg, 5, DType::F32);
    let (on_bytes, calls) = recorder();
    // f32 in, bf16 out: the count is of bytes written, 2 per element.
    let opts = WriteOptions { dtype: Some(SafeDType::BF16), on_bytes, ..Default::default() };
    let report = save_model(&tmp.path().join("m"), &cfg, &model, &opts, None).unwrap();
    let expected: u64 = model.iter().map(|(_, t)| 2 * elems(t.dims())).sum();
    assert_eq!(report.total_size, expected);
    assert_counts(&calls.lock().unwrap(), expected);
}

#[test]
fn a_sharded_upscale_and_a_load_count_every_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(4, false);
    let base =
        save(tmp.path().join("base"), &cfg, &random_model(&cfg, 9, DType::F32), &WriteOptions::default());
    let (on_bytes, calls) = recorder();
    let opts = WriteOptions { max_shard_size: Some(20_000), on_bytes, ..Default::default() };
    let out = tmp.path().join("up");
    let report = upscale(&base, &out, &LayerSpec::Remove(1), &opts).unwrap();
    assert!(report.files.len() > 1, "sharded: {:?}", report.files);
    let up = Checkpoint::open(&out).unwrap();
    let expected: u64 = up.names().iter().map(|n| 4 * elems(&up.info(n).unwrap().shape)).sum();
    assert_counts(&calls.lock().unwrap(), expected);

    let (on_bytes, calls) = recorder();
    let named = up.load_parameters(&on_bytes).unwrap();
    assert_eq!(named.len(), up.names().len());
    assert_counts(&calls.lock().unwrap(), expected);
    // What it loads is what `load` gives, tensor by tensor.
    for (name, t) in &named {
        assert_eq!(t.data::<f32>("test").unwrap(), up.load(name).unwrap().data::<f32>("test").unwrap());
    }
}
