//! `exp`, `sigmoid` and SiLU over `f32` slices, vectorised.
//!
//! burn-flex 0.22 evaluates `exp`/`sigmoid` one element at a time through libm's `expf`, which
//! does not vectorise: in EfficientNet-B0 that was 44 % of the forward pass. Here `exp` is
//! Cody–Waite range reduction `x = n·ln 2 + r`, |r| ≤ ln 2 / 2, a degree-6 polynomial for `eʳ`
//! (Cephes' `expf` coefficients, S. L. Moshier) and `2ⁿ` built from exponent bits, written
//! branch-free so that the compiler vectorises the loop; [`pulp`] compiles it once per
//! instruction set (AVX2+FMA, AVX-512, scalar) and picks one at run time, without `unsafe` here.
//!
//! Accuracy (tested against `f64` on 2²¹ points of the range and on special values):
//! - [`exp_in_place`]: relative error ≤ [`EXP_MAX_REL_ERR`] over the normal range; below
//!   e⁻⁸⁷·³³ the result is subnormal (gradual underflow, absolute error ≤ 2⁻¹⁴⁹), below
//!   −103.98 it is 0; above 88.72 it is +∞; NaN stays NaN.
//! - [`sigmoid_in_place`] `1 / (1 + e⁻ˣ)`: relative error ≤ [`SIGMOID_MAX_REL_ERR`]; below
//!   −87.3 the result is subnormal (absolute error of a few 2⁻¹⁴⁹); ±∞ → 1 / 0.
//! - [`silu_in_place`] `x · sigmoid(x)`: relative error ≤ [`SIGMOID_MAX_REL_ERR`]; below −87.3
//!   absolute error ≤ |x| · 2⁻¹⁴⁹; +∞ → +∞, −∞ → NaN (as `x · sigmoid(x)` in Burn and PyTorch).

/// Largest relative error of [`exp_in_place`] on normal results: one ulp (measured 8.2e-8).
pub const EXP_MAX_REL_ERR: f64 = 1.2e-7;
/// Largest relative error of [`sigmoid_in_place`] and [`silu_in_place`] where the result and
/// sigmoid(x) are normal (measured 1.9e-7 and 2.3e-7).
pub const SIGMOID_MAX_REL_ERR: f64 = 3e-7;

/// Above this, `eˣ` overflows `f32`.
const EXP_HI: f32 = 88.722_84;
/// Below this, `eˣ` rounds to 0 in `f32` (half the smallest subnormal).
const EXP_LO: f32 = -103.972_08;

/// `eˣ` for one lane, branch-free (selects, not jumps, so that loops over it vectorise). No
/// float-to-int `as` conversion either: Rust's saturating casts do not vectorise on x86, so the
/// rounding of `x·log₂e` and its integer come from adding 1.5·2²³ (which leaves the rounded
/// value in the low mantissa bits).
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n · LN2_HI` is exact for |n| < 2⁹ (Cephes' C1, C2).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    const MAGIC_BITS: i32 = 0x4B40_0000;
    let xc = x.clamp(EXP_LO, EXP_HI); // NaN stays NaN here and is restored below
    let t = xc * LOG2E + MAGIC; // rounds x·log₂e to the nearest integer n
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC_BITS);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2ⁿ as two normal factors, so that n down to −150 underflows gradually rather than
    // wrapping the exponent field: n ∈ [−150, 128] → n₁, n₂ ∈ [−75, 64].
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    let y = er * s1 * s2;
    let y = if x > EXP_HI { f32::INFINITY } else { y };
    let y = if x < EXP_LO { 0.0 } else { y };
    if x.is_nan() { x } else { y }
}

/// `1 / (1 + e⁻ˣ)` for one lane, as `1 / (1 + e)` or `e / (1 + e)` with `e = e^−|x|`: the
/// exponential never overflows, so sigmoid and SiLU of large negative inputs keep their tiny
/// values instead of flushing to 0.
#[inline(always)]
fn sigmoid_lane(x: f32) -> f32 {
    let e = exp_lane(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

/// `x · sigmoid(x)` for one lane.
#[inline(always)]
fn silu_lane(x: f32) -> f32 {
    x * sigmoid_lane(x)
}

/// Applies `f` to every element under the best instruction set of this CPU.
#[inline(always)]
fn map_in_place(xs: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    pulp::Arch::new().dispatch(
        #[inline(always)]
        || {
            for x in xs.iter_mut() {
                *x = f(*x);
            }
        },
    );
}

/// `x ← eˣ` for every element (see the module's accuracy notes).
pub fn exp_in_place(xs: &mut [f32]) {
    map_in_place(xs, exp_lane);
}

/// `x ← 1 / (1 + e⁻ˣ)` for every element.
pub fn sigmoid_in_place(xs: &mut [f32]) {
    map_in_place(xs, sigmoid_lane);
}

/// `x ← x · sigmoid(x)` (SiLU, swish) for every element.
pub fn silu_in_place(xs: &mut [f32]) {
    map_in_place(xs, silu_lane);
}

/// One element of [`silu_in_place`], for kernels that fuse SiLU into their own loop.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    silu_lane(x)
}

/// One element of [`sigmoid_in_place`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    sigmoid_lane(x)
}
