//! Gradient buckets (solar_engine::comm::Bucket) against a loop oracle, with the collectives
//! played by the test: every rank packs its gradients, the buckets are summed element by
//! element in rank order (what a reduce-scatter then all-gather computes), and what each rank
//! unpacks must be exactly its `shard_range` of each summed gradient (ZeRO-1/2) and each whole
//! summed gradient (ZeRO-0). On the CPU in f32 and f64, and on CUDA (the emulator here) with
//! bf16 gradients summed in f32 and rounded once, as the collectives do tensor by tensor.

use solar_engine::comm::{plan_buckets, shard_range, Bucket};
use solar_engine::cuda::test_gpu;
use solar_engine::{DType, Device, Rng, Tensor};

/// Gradient lengths that cover shards of every kind: fewer elements than ranks, exact
/// multiples, ragged ends, a matrix.
const SHAPES: [&[usize]; 6] = [&[1], &[2], &[7], &[3, 4], &[10], &[5]];

/// Each rank's gradients (None: this rank has none, as a rank whose rows skip a parameter).
fn rank_grads(size: usize, dtype: DType, device: Device, rng: &mut Rng) -> Vec<Vec<Option<Tensor>>> {
    (0..size)
        .map(|r| {
            SHAPES
                .iter()
                .enumerate()
                .map(|(i, &shape)| {
                    if (i + r) % 4 == 3 {
                        return None;
                    }
                    let t = Tensor::randn(shape, 1.0, DType::F64, rng).to_dtype(dtype).unwrap();
                    Some(t.to_device(device).unwrap())
                })
                .collect()
        })
        .collect()
}

/// Element-wise sum in rank order of f64 copies of the values, rounded through `dtype` the
/// way the collectives round: bf16 values widen exactly, add in f32, round once.
fn oracle_sum(grads: &[Vec<Option<Tensor>>], i: usize, dtype: DType) -> Vec<f64> {
    let n: usize = SHAPES[i].iter().product();
    let mut acc32 = vec![0f32; n];
    let mut acc64 = vec![0f64; n];
    for g in grads.iter().filter_map(|r| r[i].as_ref()) {
        let v = g.to_vec_f64().unwrap();
        for j in 0..n {
            acc32[j] += v[j] as f32;
            acc64[j] += v[j];
        }
    }
    match dtype {
        DType::F64 => acc64,
        DType::BF16 => acc32.iter().map(|&x| half::bf16::from_f32(x).to_f64()).collect(),
        _ => acc32.iter().map(|&x| x as f64).collect(),
    }
}

/// The sum of every rank's packed bucket, in rank order, in the bucket's dtype.
fn summed_bucket(packed: &[Tensor], dtype: DType, device: Device) -> Tensor {
    let n = packed[0].elem_count();
    let (mut a32, mut a64) = (vec![0f32; n], vec![0f64; n]);
    for p in packed {
        let v = p.to_vec_f64().unwrap();
        for j in 0..n {
            a32[j] += v[j] as f32;
            a64[j] += v[j];
        }
    }
    let t = match dtype {
        DType::F64 => Tensor::from_vec(a64, [n]).unwrap(),
        _ => Tensor::from_vec(a32, [n]).unwrap(),
    };
    t.to_device(device).unwrap()
}

fn check(size: usize, dtype: DType, device: Device, cap_bytes: usize) {
    let mut rng = Rng::new(7 + size as u64);
    let grads = rank_grads(size, dtype, device, &mut rng);
    let lens: Vec<(usize, DType)> = SHAPES.iter().map(|s| (s.iter().product(), dtype)).collect();
    let order: Vec<usize> = (0..SHAPES.len()).rev().collect();
    let plans: Vec<Vec<Bucket>> =
        (0..size).map(|r| plan_buckets(&lens, &order, r, size, cap_bytes)).collect();
    let mut seen = vec![false; SHAPES.len()];
    for (b, layout) in plans[0].iter().enumerate() {
        let packed: Vec<Tensor> = (0..size)
            .map(|r| {
                let mine: Vec<Option<Tensor>> = layout.members.iter().map(|&i| grads[r][i].clone()).collect();
                plans[r][b].pack(&mine, device).unwrap()
            })
            .collect();
        let summed = summed_bucket(&packed, layout.dtype, device);
        let segment = summed.elem_count() / size;
        let all = summed.to_vec_f64().unwrap();
        for r in 0..size {
            let bucket = &plans[r][b];
            // What rank r's reduce-scatter hands it: segment r of the summed bucket.
            let piece = Tensor::from_vec(all[r * segment..(r + 1) * segment].to_vec(), [segment])
                .unwrap()
                .to_dtype(layout.dtype)
                .unwrap()
                .to_device(device)
                .unwrap();
            for (k, &i) in bucket.members.iter().enumerate() {
                seen[i] = true;
                let want = oracle_sum(&grads, i, dtype);
                let n = want.len();
                let shard = bucket.shard_of(&piece, k, dtype).unwrap();
                assert_eq!(shard.dtype(), dtype);
                let got = shard.to_vec_f64().unwrap();
                assert_eq!(got, want[shard_range(n, r, size)], "size {size} rank {r} gradient {i} shard");
                let whole = bucket.whole_of(&summed, k, &SHAPES[i].into(), dtype).unwrap();
                assert_eq!(whole.dims(), SHAPES[i]);
                assert_eq!(whole.to_vec_f64().unwrap(), want, "size {size} rank {r} gradient {i} whole");
            }
        }
    }
    assert!(seen.iter().all(|&s| s), "every gradient is in a bucket");
}

#[test]
fn buckets_unpack_each_ranks_shards_and_the_whole_sums_on_the_cpu() {
    for size in 1..=4 {
        for dtype in [DType::F32, DType::F64] {
            for cap in [1, 64, 1 << 20] {
                check(size, dtype, Device::Cpu, cap);
            }
        }
    }
}

#[test]
fn buckets_of_bf16_gradients_sum_in_f32_on_cuda() {
    let Some(g) = test_gpu() else { return };
    let device = Device::Cuda(g.ordinal);
    for size in [1, 3] {
        for cap in [1, 64, 1 << 20] {
            check(size, DType::BF16, device, cap);
            check(size, DType::F32, device, cap);
        }
    }
}
