//! The emulator's checks, each on a small kernel broken in one way (kernels/emu/broken.cu): the
//! launch fails with a report naming the kernel, block, thread, address and allocation. A correct
//! kernel using shared memory, barriers, shuffles and cp.async passes clean and computes the
//! right result.
mod emu_common;

use emu_common::{arg, launch, Buf};

const M: &str = "emu_broken";

fn contains_all(report: &str, parts: &[&str]) {
    for p in parts {
        assert!(report.contains(p), "report lacks {p:?}:\n{report}");
    }
}

#[test]
fn a_global_write_one_past_the_end_is_stopped_and_named() {
    let y = Buf::from(&[0.0f32; 100]);
    let (mut py, mut n) = (y.addr(), 100i64);
    let r = launch(M, "broken_oob_write", 1, 128, 0, &[arg(&mut py), arg(&mut n)]).unwrap_err();
    contains_all(
        &r,
        &[
            "global memory out of bounds",
            "broken_oob_write",
            "block (0,0,0) thread (100,0,0)",
            "write of 4 bytes",
            "byte offset 400 of allocation",
            "(400 bytes at",
            "4 bytes past its end",
            "launch stopped",
        ],
    );
    // The launch stopped before the bad write; every element before it was written.
    assert!(y.read::<f32>().iter().all(|&v| v == 1.0));
}

#[test]
fn a_shared_read_without_a_barrier_after_another_threads_write_is_a_race() {
    let y = Buf::from(&[0.0f32; 64]);
    let mut py = y.addr();
    let r = launch(M, "broken_shared_race", 1, 64, 0, &[arg(&mut py)]).unwrap_err();
    contains_all(
        &r,
        &[
            "race",
            "broken_shared_race",
            "thread (",
            "shared offset",
            "static __shared__ #0",
            "conflicts with thread",
        ],
    );
}

#[test]
fn a_read_of_shared_memory_nothing_wrote_is_reported() {
    let y = Buf::from(&[0.0f32; 64]);
    let mut py = y.addr();
    let r = launch(M, "broken_uninit_shared", 1, 64, 0, &[arg(&mut py)]).unwrap_err();
    contains_all(
        &r,
        &["read of uninitialised shared memory", "broken_uninit_shared", "thread (1,0,0)", "shared offset 4"],
    );
}

#[test]
fn a_barrier_half_the_block_skips_is_reported() {
    let y = Buf::from(&[0.0f32; 64]);
    let mut py = y.addr();
    let r = launch(M, "broken_divergent_barrier", 1, 64, 0, &[arg(&mut py)]).unwrap_err();
    contains_all(
        &r,
        &[
            "__syncthreads not reached by every thread",
            "broken_divergent_barrier",
            "16 threads at __syncthreads",
            "48 threads exited",
            "block (0,0,0) thread (16,0,0)",
        ],
    );
}

#[test]
fn a_misaligned_16_byte_access_is_reported() {
    let x = Buf::from(&[1.0f32; 4 * 32 + 4]);
    let y = Buf::from(&[0.0f32; 32]);
    let (mut px, mut py) = (x.addr(), y.addr());
    let r = launch(M, "broken_misaligned16", 1, 32, 0, &[arg(&mut px), arg(&mut py)]).unwrap_err();
    contains_all(
        &r,
        &[
            "misaligned 16-byte access",
            "broken_misaligned16",
            "thread (0,0,0)",
            &format!("{:#x}", px + 4),
            "launch stopped",
        ],
    );
}

#[test]
fn reading_a_cp_async_tile_before_its_wait_sees_the_old_contents() {
    let x = Buf::from(&[2.0f32; 4 * 32]);
    let y = Buf::from(&[0.0f32; 32]);
    let (mut px, mut py) = (x.addr(), y.addr());
    let r = launch(M, "broken_read_before_wait", 1, 32, 0, &[arg(&mut px), arg(&mut py)]).unwrap_err();
    contains_all(&r, &["read of uninitialised shared memory", "broken_read_before_wait", "thread (0,0,0)"]);
}

#[test]
fn a_correct_kernel_passes_clean_and_sums_right() {
    let vals: Vec<f32> = (0..4 * 256 * 3).map(|i| (i % 97) as f32 * 0.5).collect();
    let x = Buf::from(&vals);
    let y = Buf::from(&[0.0f32; 3]);
    let (mut px, mut py) = (x.addr(), y.addr());
    launch(M, "correct_block_sum", 1, 256, 0, &[arg(&mut px), arg(&mut py)]).unwrap();
    // Block 0 sums x[4 * ((t + 1) % 256)] over its 256 threads: every 4th value of the first 1024.
    let want: f32 = (0..256).map(|t| vals[4 * t]).sum();
    assert_eq!(y.read::<f32>()[0], want);
}

#[test]
fn launches_the_device_would_refuse_are_refused() {
    let y = Buf::from(&[0.0f32; 4]);
    let mut py = y.addr();
    let r = launch(M, "correct_block_sum", 1, 2048, 0, &[arg(&mut py), arg(&mut py)]).unwrap_err();
    contains_all(&r, &["invalid launch of correct_block_sum", "2048 threads"]);
    let r = launch(M, "correct_block_sum", 1, 256, 300 * 1024, &[arg(&mut py), arg(&mut py)]).unwrap_err();
    contains_all(&r, &["bytes of dynamic shared memory"]);
}

#[test]
fn a_launch_with_the_wrong_argument_count_is_refused() {
    let mut py = 0u64;
    let r = launch(M, "broken_oob_write", 1, 32, 0, &[arg(&mut py)]).unwrap_err();
    contains_all(&r, &["broken_oob_write takes 2 arguments (*mut f32, i64), the launch passed 1"]);
}

#[test]
fn printf_works_in_kernels() {
    let mut tag = 7i32;
    launch(M, "hello_printf", 2, 32, 0, &[arg(&mut tag)]).unwrap();
}
