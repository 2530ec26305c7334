//! matmul.cu on the emulator executor against a plain f64 loop, for every layout, both tiles,
//! bf16 and f32 output, aligned shapes (the cp.async path) and odd ones (the guarded path),
//! batched with a shared B, and accumulate. The engine's GPU tests cover the launchers; this
//! holds the kernel itself, and the emulator's ldmatrix/mma/cp.async, to an independent oracle.
mod emu_common;

use emu_common::Buf;
use solar_kernels::emu;
use std::ffi::c_void;

fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}
fn bf16_val(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Deterministic values in [-1, 1), rounded to bf16.
fn values(n: usize, seed: u64) -> Vec<u16> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            bf16_bits(((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run(
    ta: bool,
    tb: bool,
    small: bool,
    f32out: bool,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    accumulate: bool,
) {
    let name = format!(
        "matmul_{}{}_bf16{}{}",
        if ta { "t" } else { "n" },
        if tb { "t" } else { "n" },
        if f32out { "_f32out" } else { "" },
        if small { "_s" } else { "" }
    );
    let kernel = emu::kernel("matmul", &name).unwrap_or_else(|| panic!("{name} missing"));
    let a = values(batch * m * k, 1);
    let b = values(k * n, 2); // shared across the batch (stride 0)
    let c0 = values(batch * m * n, 3);
    let (da, db) = (Buf::from(&a), Buf::from(&b));
    let dc = if f32out {
        Buf::from(&c0.iter().map(|&x| bf16_val(x)).collect::<Vec<f32>>())
    } else {
        Buf::from(&c0)
    };
    let (bm, bn, smem) = if small { (128, 128, 65536) } else { (128, 256, 98304) };
    let grid = [n.div_ceil(bn) as u32, m.div_ceil(bm) as u32, batch as u32];
    let (mut pa, mut pb, mut pc) = (da.addr(), db.addr(), dc.addr());
    let (mut mi, mut ni, mut ki) = (m as i32, n as i32, k as i32);
    let (mut sa, mut sb, mut sc) = ((m * k) as i64, 0i64, (m * n) as i64);
    let mut acc = accumulate as i32;
    let args: Vec<*mut c_void> = vec![
        &mut pa as *mut _ as *mut c_void,
        &mut pb as *mut _ as *mut c_void,
        &mut pc as *mut _ as *mut c_void,
        &mut mi as *mut _ as *mut c_void,
        &mut ni as *mut _ as *mut c_void,
        &mut ki as *mut _ as *mut c_void,
        &mut sa as *mut _ as *mut c_void,
        &mut sb as *mut _ as *mut c_void,
        &mut sc as *mut _ as *mut c_void,
        &mut acc as *mut _ as *mut c_void,
    ];
    // SAFETY: the arguments match matmul.cu's parameters; the buffers hold the sizes it reads.
    unsafe { emu::launch(&kernel, grid, [256, 1, 1], smem, &args) }.unwrap_or_else(|e| panic!("{name}: {e}"));
    let got: Vec<f64> = if f32out {
        dc.read::<f32>().iter().map(|&x| x as f64).collect()
    } else {
        dc.read::<u16>().iter().map(|&x| bf16_val(x) as f64).collect()
    };
    for z in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut want = if accumulate { bf16_val(c0[z * m * n + i * n + j]) as f64 } else { 0.0 };
                for p in 0..k {
                    let av = if ta { a[z * m * k + p * m + i] } else { a[z * m * k + i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    want += bf16_val(av) as f64 * bf16_val(bv) as f64;
                }
                let g = got[z * m * n + i * n + j];
                let tol = if f32out { 1e-4 } else { 1e-2 } * (1.0 + want.abs());
                assert!((g - want).abs() <= tol, "{name} {m}x{n}x{k}: C[{z}][{i}][{j}] = {g}, want {want}");
            }
        }
    }
}

#[test]
fn every_layout_and_tile_matches_a_loop_on_aligned_shapes() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        run(ta, tb, true, true, 64, 64, 64, 1, false);
        run(ta, tb, false, false, 32, 72, 40, 1, false);
    }
}

#[test]
fn odd_shapes_take_the_guarded_path_and_stay_in_bounds() {
    run(false, false, true, true, 37, 19, 23, 2, false);
    run(true, true, true, false, 5, 33, 9, 1, false);
}

#[test]
fn accumulate_adds_to_c() {
    run(false, true, true, true, 48, 24, 32, 2, true);
}
