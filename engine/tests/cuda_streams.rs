//! The emulator's stream check (engine/src/cuda/stream_check.rs) on real kernels and memory
//! operations: each use of a buffer across the compute and comm streams that a GPU would not
//! order (no event after the other stream's last conflicting use, no host wait) is an error
//! naming the op and both streams, and the same calls with the event (or a host wait) pass and
//! compute what the host computes. The check is process-wide and the current stream is per
//! device, so the tests take turns (`emu`). Emulator only: on a GPU nothing would report.

mod cuda_common;
use cuda_common::*;
use solar_engine::cuda::reduce::{partial_count, stage1, CHUNK};
use solar_engine::cuda::{self, elementwise, CudaData, CudaStorage, DeviceBuffer, Gpu, Stream};
use solar_engine::{ops, DType, Device, Tape, Tensor};
use std::sync::{Arc, Mutex, MutexGuard};
use Stream::{Comm, Compute};

/// Elements of the test buffers: three reduction chunks, the last one partial.
const N: usize = 2 * CHUNK + 3616;

/// The emulator as cuda:0 (poisoned allocations), held by this test alone, with no report
/// left waiting by another; None (the test skips) when this build's emulator has no kernels.
fn emu() -> Option<(MutexGuard<'static, ()>, Arc<Gpu>)> {
    static TURN: Mutex<()> = Mutex::new(());
    if solar_kernels::emu::kernels().is_empty() {
        eprintln!("skipping: this build's emulator has no kernels (SOLAR_CUDA_WHEELS unset?)");
        return None;
    }
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    cuda::use_emulator();
    let gpu = Gpu::get_emulator(0);
    gpu.set_poison(true);
    cuda::set_stream_check(true);
    // Every test ends by asserting nothing is left; this clears what a failed one left.
    if let Err(e) = gpu.synchronize() {
        eprintln!("left by a failed test: {e}");
    }
    Some((turn, gpu))
}

/// Small integers, so every f32 sum below is exact.
fn host() -> Vec<f32> {
    (0..N).map(|i| (i % 7) as f32).collect()
}

/// The sum of each CHUNK of `x`, as stage 1 of the device sum writes them.
fn chunk_sums(x: &[f32]) -> Vec<f32> {
    x.chunks(CHUNK).map(|c| c.iter().sum()).collect()
}

/// f32 storage on `gpu` holding `b`.
fn storage(gpu: &Arc<Gpu>, b: DeviceBuffer<f32>) -> CudaStorage {
    CudaStorage::new(gpu.clone(), CudaData::F32(b))
}

/// Orders later work on `to` after everything queued on `from` so far.
fn order(gpu: &Gpu, from: Stream, to: Stream) {
    let ev = gpu.record_event(from).unwrap();
    gpu.wait_event(to, &ev).unwrap();
}

fn assert_err(e: solar_engine::Error, wants: &[&str]) {
    let e = e.to_string();
    for w in wants {
        assert!(e.contains(w), "the error should say {w:?}: {e}");
    }
}

#[test]
fn comm_reading_what_compute_wrote_needs_an_event_recorded_after_the_write() {
    let Some((_turn, gpu)) = emu() else { return };
    {
        let mut x = storage(&gpu, gpu.alloc::<f32>(N).unwrap());
        let mut partials = gpu.alloc::<f32>(partial_count(N)).unwrap();
        let early = gpu.record_event(Compute).unwrap();
        gpu.wait_event(Comm, &early).unwrap();
        elementwise::fill(&mut x, 3.0).unwrap();
        let read = |p: &mut DeviceBuffer<f32>| gpu.on_stream(Comm, || stage1(&gpu, &x.data, false, p, 0));
        let wants = [
            "cuda sum: stream check: the comm stream reads memory (argument 0 of reduce.cu:sum_partials_f32",
            "last written on the compute stream",
            "record an event on compute and wait for it on comm",
        ];
        assert_err(read(&mut partials).unwrap_err(), &wants);
        // The event recorded before the fill does not order it, however often comm waits.
        gpu.wait_event(Comm, &early).unwrap();
        assert_err(read(&mut partials).unwrap_err(), &wants);
        order(&gpu, Compute, Comm);
        read(&mut partials).unwrap();
        let got = gpu.on_stream(Comm, || gpu.download(&partials)).unwrap();
        assert_eq!(got, chunk_sums(&vec![3.0; N]));
    }
    gpu.synchronize().unwrap();
}

#[test]
fn compute_reading_what_comm_wrote_needs_an_event_or_a_host_wait() {
    let Some((_turn, gpu)) = emu() else { return };
    {
        let h = host();
        let mut x = gpu.alloc::<f32>(N).unwrap();
        let mut partials = gpu.alloc::<f32>(partial_count(N)).unwrap();
        order(&gpu, Compute, Comm);
        gpu.on_stream(Comm, || gpu.upload_into(&h, &mut x)).unwrap();
        let x = CudaData::F32(x);
        let e = stage1(&gpu, &x, false, &mut partials, 0).unwrap_err();
        assert_err(e, &["the compute stream reads memory", "last written on the comm stream"]);
        order(&gpu, Comm, Compute);
        stage1(&gpu, &x, false, &mut partials, 0).unwrap();
        assert_eq!(gpu.download(&partials).unwrap(), chunk_sums(&h));

        // Comm rewrites it (after compute's read), then the host waits for comm instead.
        let CudaData::F32(mut x) = x else { unreachable!() };
        let twice: Vec<f32> = h.iter().map(|v| 2.0 * v).collect();
        order(&gpu, Compute, Comm);
        gpu.on_stream(Comm, || gpu.upload_into(&twice, &mut x)).unwrap();
        assert_err(gpu.download(&x).unwrap_err(), &["cuda download", "compute stream reads"]);
        gpu.synchronize_stream(Comm).unwrap();
        assert_eq!(gpu.download(&x).unwrap(), twice);

        // A download on comm is a host wait for comm too.
        order(&gpu, Compute, Comm);
        gpu.on_stream(Comm, || gpu.upload_into(&h, &mut x)).unwrap();
        assert_eq!(gpu.on_stream(Comm, || gpu.download(&x)).unwrap(), h);
        stage1(&gpu, &CudaData::F32(x), false, &mut partials, 0).unwrap();
    }
    gpu.synchronize().unwrap();
}

#[test]
fn a_buffer_allocated_on_compute_is_used_on_comm_only_after_an_event() {
    let Some((_turn, gpu)) = emu() else { return };
    {
        let mut x = storage(&gpu, gpu.alloc::<f32>(N).unwrap());
        let e = gpu.on_stream(Comm, || elementwise::fill(&mut x, 1.0)).unwrap_err();
        let alloc = "allocated on the compute stream";
        let wants = ["cuda fill: stream check: the comm stream writes memory", alloc, "after allocating"];
        assert_err(e, &wants);
        let e = gpu.on_stream(Comm, || gpu.upload_into(&[5.0f32], x.f32_mut("t").unwrap())).unwrap_err();
        assert_err(e, &["cuda upload", alloc]);
        // `upload` writes on compute whatever the current stream.
        let y = gpu.on_stream(Comm, || gpu.upload(&host())).unwrap();
        order(&gpu, Compute, Comm);
        // A copy on comm reads an ordered source into a fresh, unordered destination.
        let e = gpu.on_stream(Comm, || gpu.try_clone(&y)).unwrap_err();
        assert_err(e, &["cuda copy", "writes memory (the destination, an allocation of", alloc]);
        gpu.on_stream(Comm, || elementwise::fill(&mut x, 1.0)).unwrap();
        order(&gpu, Comm, Compute);
        assert_eq!(gpu.download(x.f32("t").unwrap()).unwrap(), vec![1.0; N]);
        assert_eq!(gpu.download(&y).unwrap(), host());
    }
    gpu.synchronize().unwrap();
}

#[test]
fn a_buffer_comm_used_is_dropped_only_after_compute_waited_for_comm() {
    let Some((_turn, gpu)) = emu() else { return };
    let h = host();
    let mut partials = gpu.alloc::<f32>(partial_count(N)).unwrap();
    let mut other = storage(&gpu, gpu.alloc::<f32>(4).unwrap());
    for wait in [false, true] {
        let x = CudaData::F32(gpu.upload(&h).unwrap());
        order(&gpu, Compute, Comm);
        gpu.on_stream(Comm, || stage1(&gpu, &x, false, &mut partials, 0)).unwrap();
        if wait {
            order(&gpu, Comm, Compute);
        }
        drop(x);
        // The drop's report comes from the next checked operation, whatever it is.
        let next = elementwise::fill(&mut other, 0.0);
        if !wait {
            let wants = [
                "cuda free: stream check (at a buffer's drop): the compute stream frees memory",
                &format!("(an allocation of {} bytes) the comm stream read at its op", 4 * N),
                "record an event on comm after its last use and wait for it on compute before the drop",
            ];
            assert_err(next.unwrap_err(), &wants);
            gpu.synchronize().unwrap();
        } else {
            next.unwrap();
        }
    }
    // Dropped after comm wrote it: `synchronize` returns the report.
    let mut x = gpu.alloc::<f32>(N).unwrap();
    order(&gpu, Compute, Comm);
    gpu.on_stream(Comm, || gpu.upload_into(&h, &mut x)).unwrap();
    drop(x);
    assert_err(gpu.synchronize().unwrap_err(), &["frees memory", "last written on the comm stream"]);
    gpu.synchronize().unwrap();
    drop(partials);
    gpu.synchronize().unwrap();
}

#[test]
fn compute_overwriting_what_comm_reads_needs_an_event() {
    let Some((_turn, gpu)) = emu() else { return };
    {
        let mut x = storage(&gpu, gpu.upload(&host()).unwrap());
        let mut partials = gpu.alloc::<f32>(partial_count(N)).unwrap();
        order(&gpu, Compute, Comm);
        gpu.on_stream(Comm, || stage1(&gpu, &x.data, false, &mut partials, 0)).unwrap();
        let wants = ["the compute stream writes memory", "the comm stream read at its op"];
        assert_err(elementwise::fill(&mut x, 2.0).unwrap_err(), &["cuda fill", wants[0], wants[1]]);
        let e = gpu.memset_zeros(x.f32_mut("t").unwrap()).unwrap_err();
        assert_err(e, &["cuda memset", wants[0], wants[1]]);
        order(&gpu, Comm, Compute);
        elementwise::fill(&mut x, 2.0).unwrap();
        assert_eq!(gpu.download(x.f32("t").unwrap()).unwrap(), vec![2.0; N]);
        assert_eq!(gpu.download(&partials).unwrap(), chunk_sums(&host()));
    }
    gpu.synchronize().unwrap();
}

/// y = rmsnorm(a @ b, w) and the gradients of sum(y * r) for a, b and w, on `dev`.
fn forward_backward(dev: Device, inputs: &[Tensor], r: &Tensor) -> Vec<Tensor> {
    let tape = Tape::new();
    let on = |t: &Tensor| if dev == Device::Cpu { t.clone() } else { gpu_bf16(t) };
    let w: Vec<Tensor> = inputs.iter().map(|t| tape.watch(&on(t))).collect();
    let y = ops::rmsnorm(&ops::matmul(&w[0], &w[1]).unwrap(), &w[2], 1e-5).unwrap();
    let y = y.to_dtype(DType::F32).unwrap().to_device(Device::Cpu).unwrap();
    let grads = tape.backward(&ops::sum(&ops::mul(&y, r).unwrap()).unwrap()).unwrap();
    w.iter().map(|t| grads.get(t).expect("a gradient").clone()).collect()
}

#[test]
fn work_on_one_stream_is_never_reported() {
    let Some((_turn, gpu)) = emu() else { return };
    let inputs = [
        randn_bf16_exact(&[6, 24], 1.0, 1),
        randn_bf16_exact(&[24, 40], 0.2, 2),
        randn_bf16_exact(&[40], 1.0, 3),
    ];
    let r = randn_bf16_exact(&[6, 40], 1.0, 4);
    let want = forward_backward(Device::Cpu, &inputs, &r);
    let got = forward_backward(Device::Cuda(0), &inputs, &r);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("grad {i}"), g, w, 5e-2, 5e-2);
    }
    drop(got);
    gpu.synchronize().unwrap();
    // The same device still reports a use across streams, so the silence above is the check's.
    let x = CudaData::F32(gpu.upload(&host()).unwrap());
    let mut partials = gpu.alloc::<f32>(partial_count(N)).unwrap();
    let e = gpu.on_stream(Comm, || stage1(&gpu, &x, false, &mut partials, 0)).unwrap_err();
    assert_err(e, &["comm stream reads memory", "compute stream"]);
}

#[test]
fn the_check_can_be_turned_off_and_on() {
    let Some((_turn, gpu)) = emu() else { return };
    struct On;
    impl Drop for On {
        fn drop(&mut self) {
            cuda::set_stream_check(true);
        }
    }
    let _on = On;
    let comm_reads_fresh_upload = || {
        let x = CudaData::F32(gpu.upload(&host()).unwrap());
        let mut partials = gpu.alloc::<f32>(partial_count(N)).unwrap();
        gpu.on_stream(Comm, || stage1(&gpu, &x, false, &mut partials, 0))
    };
    cuda::set_stream_check(false);
    comm_reads_fresh_upload().unwrap();
    cuda::set_stream_check(true);
    assert_err(comm_reads_fresh_upload().unwrap_err(), &["stream check: the comm stream reads"]);
    gpu.synchronize().unwrap();
}
