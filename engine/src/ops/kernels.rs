//! CPU building blocks of the fused ops: row loops the compiler vectorizes, a vectorizable exp,
//! and a bounds-checked strided gemm for tiles inside parallel tasks.
//! Float adds are not associative, so a plain `s += x[i]` loop runs one add at a time. The
//! reductions here keep `LANES` running sums (lane l takes elements l, l + LANES, ...) and
//! combine them in a fixed tree at the end: the order depends on the row length only, so a
//! result is the same at any thread count and whatever vector width the code compiles to.

use crate::dtype::Float;

/// Independent accumulators per reduction: 16 f32 fill four SSE or two AVX registers, enough
/// to hide the add latency.
const LANES: usize = 16;

/// Adds the lanes pairwise in a fixed order.
#[inline(always)]
fn combine<F: Float>(mut acc: [F; LANES]) -> F {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    acc[0]
}

/// Folds `f(x)` of every element into `LANES` sums: sum f(x_i).
#[inline(always)]
fn lane_sum<F: Float>(x: &[F], f: impl Fn(F) -> F) -> F {
    let mut acc = [F::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    for (l, &v) in tail.iter().enumerate() {
        acc[l] += f(v);
    }
    combine(acc)
}

/// Defines `pub fn $name`, compiling its body twice: for baseline x86-64 (SSE2) and with AVX2,
/// chosen at run time (other targets get the plain build). Both builds do the same IEEE
/// operations in the same order (Rust never fuses a multiply and an add by itself), so they
/// give bitwise the same results; AVX2 only does twice the lanes per instruction.
macro_rules! simd_fn {
    ($(#[$doc:meta])* pub fn $name:ident<F: Float>($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub fn $name<F: Float>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp<F: Float>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<F: Float>($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

simd_fn! {
    /// sum_i x_i.
    pub fn sum<F: Float>(x: &[F]) -> F {
        lane_sum(x, |v| v)
    }
}

simd_fn! {
    /// sum_i x_i^2.
    pub fn sum_squares<F: Float>(x: &[F]) -> F {
        lane_sum(x, |v| v * v)
    }
}

simd_fn! {
    /// sum_i exp(x_i - shift).
    pub fn sum_exp<F: Float>(x: &[F], shift: F) -> F {
        lane_sum(x, |v| (v - shift).fast_exp())
    }
}

simd_fn! {
    /// sum_i a_i b_i over equal-length slices.
    pub fn dot<F: Float>(a: &[F], b: &[F]) -> F {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [F::zero(); LANES];
        for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
            for l in 0..LANES {
                acc[l] += ca[l] * cb[l];
            }
        }
        let done = n - n % LANES;
        for (l, (&x, &y)) in a[done..].iter().zip(&b[done..]).enumerate() {
            acc[l] += x * y;
        }
        combine(acc)
    }
}

/// max_i x_i (-inf for an empty row). A NaN is skipped here; the exp-sum that follows every
/// use turns it into a NaN result anyway.
#[inline(always)]
fn max_imp<F: Float>(x: &[F]) -> F {
    let mut acc = [F::neg_infinity(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    for (l, &v) in tail.iter().enumerate() {
        acc[l] = if v > acc[l] { v } else { acc[l] };
    }
    acc.iter().fold(F::neg_infinity(), |m, &v| if v > m { v } else { m })
}

simd_fn! {
    /// max_i x_i (-inf for an empty row); see `max_imp`.
    pub fn max<F: Float>(x: &[F]) -> F {
        max_imp(x)
    }
}

simd_fn! {
    /// logsumexp of a row: max + ln(sum exp(x - max)).
    pub fn row_lse<F: Float>(x: &[F]) -> F {
        let m = max_imp(x);
        m + lane_sum(x, |v| (v - m).fast_exp()).ln()
    }
}

simd_fn! {
    /// x = exp(x - shift) in place (-inf becomes 0); returns sum_i of the new x.
    pub fn exp_shift_sum<F: Float>(x: &mut [F], shift: F) -> F {
        for v in x.iter_mut() {
            *v = (*v - shift).fast_exp();
        }
        lane_sum(x, |v| v)
    }
}

simd_fn! {
    /// out = scale * exp(src - shift), element-wise (a softmax gradient row).
    pub fn exp_shift_scale<F: Float>(out: &mut [F], src: &[F], shift: F, scale: F) {
        for (o, &x) in out.iter_mut().zip(src) {
            *o = scale * (x - shift).fast_exp();
        }
    }
}

simd_fn! {
    /// x = scale * exp(x - shift) in place.
    pub fn exp_shift_scale_in_place<F: Float>(x: &mut [F], shift: F, scale: F) {
        for v in x.iter_mut() {
            *v = scale * (*v - shift).fast_exp();
        }
    }
}

simd_fn! {
    /// x = exp(x - shift) * (y - c), element-wise (attention's dS = P (dP - Di) for one query).
    pub fn exp_shift_mul_diff<F: Float>(x: &mut [F], shift: F, y: &[F], c: F) {
        for (v, &y) in x.iter_mut().zip(y) {
            *v = (*v - shift).fast_exp() * (y - c);
        }
    }
}

simd_fn! {
    /// x = exp(x - shifts), element-wise (attention's P^T for one key: each query its own lse).
    pub fn exp_sub_each<F: Float>(x: &mut [F], shifts: &[F]) {
        for (v, &s) in x.iter_mut().zip(shifts) {
            *v = (*v - s).fast_exp();
        }
    }
}

/// e^x for f32 without branches or calls, so loops over it vectorize (Cephes' expf):
/// x = n ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n built in the exponent
/// bits. Within 2 ulp of exp on the normal range; 0 below it (no subnormal results), +inf
/// above, NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_54; // ln of the smallest normal f32
    const HI: f32 = 88.722_84; // ln of the largest f32
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4; // ln 2 in two parts: n * LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Comparisons are false for NaN, so a NaN input flows through to the result.
    let xc = if x < LO { LO } else { x };
    let xc = if xc > HI { HI } else { xc };
    let n = (xc * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let n = if n > 127.0 { 127.0 } else { n };
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n + 127 lands in the low mantissa bits of n + SHIFT + 127; shifted up it is 2^n's exponent.
    let two_n = f32::from_bits((n + (SHIFT + 127.0)).to_bits() << 23);
    let y = er * two_n;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// A strided matrix inside a slice: element (r, c) is `data[off + r * rs + c * cs]`.
/// Transposing is swapping `rs` and `cs`.
#[derive(Clone, Copy)]
pub struct Mat<'a, F> {
    pub data: &'a [F],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Panics unless a `rows` x `cols` matrix at `off` with strides `rs`, `cs` lies within `len`.
fn check_bounds(len: usize, off: usize, rs: usize, cs: usize, rows: usize, cols: usize) {
    if rows > 0 && cols > 0 {
        let last = off + (rows - 1) * rs + (cols - 1) * cs;
        assert!(last < len, "gemm view out of bounds: last element {last}, slice length {len}");
    }
}

/// dst[m, n] = beta * A[m, k] B[k, n], or dst += beta * A B with `accumulate`. `dst` is
/// (slice, off, rs, cs) like `Mat`. `parallel` lets gemm split output tiles over rayon (used
/// for big single products; tiles inside a parallel task pass false). Either way each output
/// element sums over k in an order fixed by the shapes: deterministic at any thread count.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: (&mut [F], usize, usize, usize),
    accumulate: bool,
    a: Mat<F>,
    b: Mat<F>,
    beta: F,
    parallel: bool,
) {
    let (d, d_off, d_rs, d_cs) = dst;
    check_bounds(d.len(), d_off, d_rs, d_cs, m, n);
    check_bounds(a.data.len(), a.off, a.rs, a.cs, m, k);
    check_bounds(b.data.len(), b.off, b.rs, b.cs, k, n);
    if m == 0 || n == 0 || (k == 0 && accumulate) {
        return;
    }
    if k == 0 {
        for r in 0..m {
            for c in 0..n {
                d[d_off + r * d_rs + c * d_cs] = F::zero();
            }
        }
        return;
    }
    let par = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    let alpha = if accumulate { F::one() } else { F::zero() };
    // SAFETY: check_bounds proved every element the three views address lies inside its
    // slice, and `d` is a unique borrow, so it does not overlap `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            d.as_mut_ptr().add(d_off),
            d_cs as isize,
            d_rs as isize,
            accumulate,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            alpha,
            beta,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulp_of_exp_and_handles_the_edges() {
        let mut x = -87.3f32;
        while x < 88.7 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 2.5e-7, "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(88.72).is_finite() && exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn lane_reductions_match_plain_loops() {
        let x: Vec<f64> = (0..37).map(|i| ((i * 7919) % 101) as f64 / 10.0 - 5.0).collect();
        let y: Vec<f64> = x.iter().map(|v| v * 0.5 + 1.0).collect();
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{a} vs {b}");
        close(sum(&x), x.iter().sum());
        close(sum_squares(&x), x.iter().map(|v| v * v).sum());
        close(dot(&x, &y), x.iter().zip(&y).map(|(a, b)| a * b).sum());
        close(max(&x), x.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        let m = max(&x);
        close(row_lse(&x), m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln());
        assert_eq!(max::<f32>(&[]), f32::NEG_INFINITY);
    }
}
