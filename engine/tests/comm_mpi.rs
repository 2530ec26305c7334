//! The MPI backend's collectives with real ranks: this test binary runs itself under
//! `mpirun -np 3`, and each rank checks every collective against the answer it computes alone
//! from what every rank holds (rank r's tensor is a known function of r): sums in rank order,
//! bit for bit; shards as `shard_range` says, including empty ones (tensors shorter than the
//! world); f32, f64 and bf16 (summed in f32, rounded once).
#![cfg(feature = "mpi")]

use half::bf16;
use solar_engine::comm::{self, shard_range, Comm};
use solar_engine::{DType, Device, Tensor};

mod comm_common;
use comm_common::reduce_in_buckets;

/// Rank r's value at element i.
fn value(r: usize, i: usize) -> f64 {
    ((r * 31 + i * 7) % 13) as f64 * 0.37 - 1.1 + r as f64 * 1e-3
}

fn tensor(r: usize, len: usize, dtype: DType) -> Tensor {
    let v: Vec<f64> = (0..len).map(|i| value(r, i)).collect();
    match dtype {
        DType::F32 => Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [len]).unwrap(),
        DType::F64 => Tensor::from_vec(v, [len]).unwrap(),
        _ => Tensor::from_vec(v.iter().map(|&x| bf16::from_f64(x)).collect::<Vec<_>>(), [len]).unwrap(),
    }
}

/// The sum over ranks in rank order, in the type the backend adds in, as f64.
fn expected_sum(size: usize, len: usize, dtype: DType) -> Vec<f64> {
    (0..len)
        .map(|i| match dtype {
            DType::F64 => (1..size).fold(value(0, i), |a, r| a + value(r, i)),
            DType::F32 => (1..size).fold(value(0, i) as f32, |a, r| a + value(r, i) as f32) as f64,
            _ => {
                let x = |r| bf16::from_f64(value(r, i)).to_f32();
                bf16::from_f32((1..size).fold(x(0), |a, r| a + x(r))).to_f64()
            }
        })
        .collect()
}

#[test]
#[ignore = "one rank's half of collectives_on_three_ranks_give_the_rank_order_sums, which runs it under mpirun -np 3; alone it has no world"]
fn mpi_rank() {
    let place = comm::launch::detect().unwrap().expect("started by mpirun");
    let w = comm::init_world(&place, Device::Cpu).unwrap();
    let (rank, size) = (w.rank(), w.size());
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        for len in [0usize, 1, 2, 3, 7, 100] {
            let mine = tensor(rank, len, dtype);
            let sum = expected_sum(size, len, dtype);
            let shard = w.reduce_scatter_sum(&mine).unwrap();
            let range = shard_range(len, rank, size);
            assert_eq!(shard.to_vec_f64().unwrap(), sum[range.clone()], "{dtype:?} len {len} rank {rank}");
            let mut piece = Tensor::zeros([range.len()], dtype);
            w.reduce_scatter_into(&mine, &mut piece).unwrap();
            assert_eq!(
                piece.to_vec_f64().unwrap(),
                sum[range.clone()],
                "{dtype:?} len {len} rank {rank} into"
            );
            let mut whole = Tensor::zeros([len], dtype);
            w.all_gather_into(&shard, &mut whole).unwrap();
            assert_eq!(whole.to_vec_f64().unwrap(), sum, "{dtype:?} len {len}");
            let mut t = mine.clone();
            w.all_reduce_sum(&mut t).unwrap();
            assert_eq!(t.to_vec_f64().unwrap(), sum);
            let mut b = mine.clone();
            w.broadcast(&mut b, 2).unwrap();
            assert_eq!(b.to_vec_f64().unwrap(), tensor(2, len, dtype).to_vec_f64().unwrap());
        }
    }
    let mut v = vec![rank as f64 + 0.5, 1.0];
    w.all_reduce_f64(&mut v).unwrap();
    assert_eq!(v, vec![(0..size).map(|r| r as f64 + 0.5).sum::<f64>(), size as f64]);
    for msg in [b"".to_vec(), b"resume from step 4".to_vec()] {
        let mut bytes = if rank == 0 { msg.clone() } else { b"stale".to_vec() };
        w.broadcast_bytes(&mut bytes, 0).unwrap();
        assert_eq!(bytes, msg);
    }
    // A shard of the wrong size is an error naming the sizes, before anything is sent.
    let e =
        w.all_gather_into(&Tensor::zeros([5], DType::F32), &mut Tensor::zeros([3], DType::F32)).unwrap_err();
    assert!(e.to_string().contains("expected 1"), "{e}");
    buckets_on_the_emulator(w);
    w.barrier().unwrap();
    comm::finish();
}

#[test]
fn collectives_on_three_ranks_give_the_rank_order_sums() {
    if comm::launch::detect().ok().flatten().is_some() {
        return; // a rank itself: mpi_rank is its test
    }
    if std::process::Command::new("mpirun").arg("--version").output().is_err() {
        assert!(std::env::var("SOLAR_REQUIRE_MPI").is_err(), "SOLAR_REQUIRE_MPI=1 but mpirun is missing");
        eprintln!("skipped: mpirun not found");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "3"])
        .arg(&me)
        .args(["--ignored", "--exact", "mpi_rank", "--test-threads=1", "--color=never"])
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("1 passed").count(), 3, "every rank ran its checks: {text}");
}

/// Gradient buckets of bf16 CUDA tensors (the emulator, staged through the host) reduced for
/// real: reduce-scatter and all-gather queued on the comm stream behind the compute stream's
/// event, as the trainer does, with the emulator's stream check on. Each rank unpacks its
/// shards and the whole sums, equal to the rank-order sums.
fn buckets_on_the_emulator(w: &Comm) {
    if solar_kernels::emu::kernels().is_empty() {
        return;
    }
    solar_engine::cuda::use_emulator();
    let dev = Device::Cuda(0);
    let (rank, size) = (w.rank(), w.size());
    let lens = [7usize, 1, 100, 3];
    let grad = |i: usize| tensor(rank, lens[i], DType::BF16).to_device(dev).unwrap();
    for (b, bucket, piece) in reduce_in_buckets(w, &lens, dev, grad) {
        for (k, &i) in b.members.iter().enumerate() {
            let sum = expected_sum(size, lens[i], DType::BF16);
            let shard = b.shard_of(&piece, k, DType::BF16).unwrap();
            assert_eq!(
                shard.to_vec_f64().unwrap(),
                sum[shard_range(lens[i], rank, size)],
                "bucket member {i}"
            );
            let whole = b.whole_of(&bucket, k, &[lens[i]].into(), DType::BF16).unwrap();
            assert_eq!(whole.to_vec_f64().unwrap(), sum, "bucket member {i}, whole");
        }
    }
}
