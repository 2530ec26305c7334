//! The NCCL backend on one real GPU, as a world of one (all a one-GPU machine can hold: NCCL
//! refuses two ranks on one device). Every collective runs through NCCL and must hand back
//! exactly its input (a sum over one rank, a gather of the one shard), bf16 and f32, odd
//! lengths, an empty tensor; gradient buckets reduced on the comm stream unpack to their
//! inputs; host numbers and bytes round-trip; a CPU tensor is refused naming
//! the GPU. This holds the FFI signatures, the stream and the waits to a real library; the
//! padding of uneven shards only acts with several GPUs.
//!
//! Skips (printing why) without a real GPU or without NCCL (SOLAR_NCCL_LIB, libnccl.so.2). A
//! test binary of its own: the process joins its one world here.
use solar_engine::comm::{finish, init_world};

mod comm_common;
use comm_common::{reduce_in_buckets, torchrun_place};
use solar_engine::cuda::Gpu;
use solar_engine::{DType, Device, Rng, Tensor};

const GPU: Device = Device::Cuda(0);

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().into_iter().map(f64::to_bits).collect()
}

#[test]
fn a_world_of_one_hands_back_every_input_exactly() {
    if solar_engine::cuda::emulator_selected() {
        eprintln!("skipping NCCL test: the emulator runs CUDA tensors over MPI, not NCCL");
        return;
    }
    if let Err(e) = Gpu::get(0) {
        eprintln!("skipping NCCL test: {e}");
        return;
    }
    let place = torchrun_place(1, None);
    let w = match init_world(&place, GPU) {
        Ok(w) => w,
        Err(e) if e.to_string().contains("cannot load NCCL") => {
            eprintln!("skipping NCCL test: {e}");
            return;
        }
        Err(e) => panic!("joining a world of one: {e}"),
    };
    assert_eq!((w.backend(), w.rank(), w.size()), ("NCCL", 0, 1));
    eprintln!("world of one over {}", w.describe());

    let mut rng = Rng::new(11);
    for (len, dtype) in
        [(1000, DType::F32), (1001, DType::BF16), (1, DType::F32), (0, DType::BF16), (77, DType::BF16)]
    {
        let x = Tensor::randn([len], 1.0, dtype, &mut rng).to_device(GPU).unwrap();
        let want = bits(&x);
        let s = w.reduce_scatter_sum(&x).unwrap();
        assert_eq!((s.dims(), s.dtype(), s.device()), (&[len][..], dtype, GPU));
        assert_eq!(bits(&s), want, "reduce-scatter of {len} {dtype:?}");
        let mut full = Tensor::zeros_on([len], dtype, GPU).unwrap();
        w.all_gather_into(&s, &mut full).unwrap();
        assert_eq!(bits(&full), want, "all-gather of {len} {dtype:?}");
        let mut t = x.clone();
        w.all_reduce_sum(&mut t).unwrap();
        assert_eq!(bits(&t), want, "all-reduce of {len} {dtype:?}");
        w.broadcast(&mut t, 0).unwrap();
        assert_eq!(bits(&t), want, "broadcast of {len} {dtype:?}");
        assert_eq!(bits(&x), want, "the input is untouched");
    }
    // A shaped tensor keeps its shape through all-reduce.
    let m = Tensor::randn([3, 5], 1.0, DType::BF16, &mut rng).to_device(GPU).unwrap();
    let mut m2 = m.clone();
    w.all_reduce_sum(&mut m2).unwrap();
    assert_eq!((m2.dims(), bits(&m2)), (&[3, 5][..], bits(&m)));

    let mut v = [1.5, -2.0, 1e300, f64::MIN_POSITIVE];
    w.all_reduce_f64(&mut v).unwrap();
    assert_eq!(v, [1.5, -2.0, 1e300, f64::MIN_POSITIVE]);
    for msg in [&b"stop at step 7"[..], &[], &[0u8; 5000]] {
        let mut b = msg.to_vec();
        w.broadcast_bytes(&mut b, 0).unwrap();
        assert_eq!(b, msg);
    }
    w.barrier().unwrap();

    // Gradient buckets on the comm stream: queued behind the compute stream's event, waited for
    // by settle, unpacked after the compute stream waits on the comm stream's event.
    let lens = [7usize, 1, 300, 3];
    let xs: Vec<Tensor> = lens
        .iter()
        .map(|&n| Tensor::randn([n], 1.0, DType::BF16, &mut rng).to_device(GPU).unwrap())
        .collect();
    for (b, bucket, piece) in reduce_in_buckets(w, &lens, GPU, |i| xs[i].clone()) {
        for (k, &i) in b.members.iter().enumerate() {
            assert_eq!(bits(&b.shard_of(&piece, k, DType::BF16).unwrap()), bits(&xs[i]), "bucket member {i}");
            assert_eq!(bits(&b.whole_of(&bucket, k, &[lens[i]].into(), DType::BF16).unwrap()), bits(&xs[i]));
        }
    }

    let e = w.reduce_scatter_sum(&Tensor::zeros([4], DType::F32)).unwrap_err().to_string();
    assert!(e.contains("cuda:0") && e.contains("cpu"), "{e}");
    let e = w.reduce_scatter_sum(&Tensor::zeros_on([4], DType::I32, GPU).unwrap()).unwrap_err().to_string();
    assert!(e.contains("f32 or bf16"), "{e}");
    finish();
}
