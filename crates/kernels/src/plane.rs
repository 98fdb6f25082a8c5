//! Per-channel kernels over one `H × W` plane of an NCHW tensor: the inference batch norm with
//! its activation fused in, the squeeze-excitation's pooling and rescaling, the depthwise
//! convolution. Each is a plain loop that [`pulp`] compiles per instruction set; reductions
//! keep [`LANES`] partial sums so that they vectorise (a single `f32` accumulator cannot,
//! since reordering a float sum changes it).

/// Partial sums per reduction: 8 `f32` fill one AVX2 register, two SSE ones.
pub const LANES: usize = 8;

/// Runs `f` under the best instruction set of this CPU. Callers mark the closure
/// `#[inline(always)]`: only code inlined into pulp's per-instruction-set function is compiled
/// for that instruction set (a closure left out of line runs as baseline x86-64, with libm calls).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// `x ← act(x · a + b)` over one plane: batch norm at inference (`a = γ / √(σ² + ε)`,
/// `b = β − μ·a`) and the activation after it, in one pass.
#[inline(always)]
pub fn affine_act(xs: &mut [f32], a: f32, b: f32, act: impl Fn(f32) -> f32) {
    for x in xs.iter_mut() {
        *x = act(*x * a + b);
    }
}

/// `Σ x` with [`LANES`] partial sums.
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// `Σ aᵢ·bᵢ` with [`LANES`] partial sums (`a` and `b` of one length).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Geometry of a depthwise convolution over one plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwGeometry {
    /// Input height and width.
    pub input: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
    /// Square kernel size.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero rows above and columns left of the input (the bottom/right padding follows from
    /// the output size: TensorFlow's asymmetric "SAME" works as well as PyTorch's symmetric).
    pub pad: [usize; 2],
}

impl DwGeometry {
    /// Output size for padding `[top, bottom]`, `[left, right]`.
    pub fn new(input: [usize; 2], kernel: usize, stride: usize, pad: [[usize; 2]; 2]) -> Self {
        let out = |n: usize, p: [usize; 2]| (n + p[0] + p[1]).saturating_sub(kernel) / stride + 1;
        Self {
            input,
            output: [out(input[0], pad[0]), out(input[1], pad[1])],
            kernel,
            stride,
            pad: [pad[0][0], pad[1][0]],
        }
    }

    /// The output columns `ox` whose input column `ox·stride + kx − left` lies inside the input.
    #[inline(always)]
    fn valid_cols(&self, kx: usize) -> std::ops::Range<usize> {
        let [_, w] = self.input;
        let [_, wo] = self.output;
        let (s, left) = (self.stride, self.pad[1]);
        // ox·s + kx ≥ left  and  ox·s + kx − left ≤ w − 1
        let lo = left.saturating_sub(kx).div_ceil(s);
        let hi = if w + left > kx {
            ((w + left - kx - 1) / s + 1).min(wo)
        } else {
            0
        };
        lo..hi.max(lo)
    }
}

/// Buffers one thread reuses across the [`depthwise_plane`] calls of a layer: the column
/// phases of a strided input plane, and each kernel column's valid output range (computed once
/// per geometry, not per plane: late layers have thousands of 40-value planes).
#[derive(Debug, Default)]
pub struct DwScratch {
    phases: Vec<f32>,
    cols: Vec<std::ops::Range<usize>>,
    cols_of: Option<DwGeometry>,
}

/// One output plane of a depthwise convolution: `out[oy][ox] = Σ k[ky][kx] ·
/// in[oy·s + ky − top][ox·s + kx − left]`, zero outside the input. Rows accumulate one kernel
/// tap at a time along contiguous output columns, so that the loop vectorises; for stride
/// `s > 1` the input rows are first split into their `s` column phases (columns q, q+s, q+2s…)
/// in `scratch`, so that every tap reads consecutive values there too.
#[inline(always)]
pub fn depthwise_plane(
    input: &[f32],
    weights: &[f32],
    g: &DwGeometry,
    out: &mut [f32],
    scratch: &mut DwScratch,
) {
    let ([h, w], [_, wo], k, s) = (g.input, g.output, g.kernel, g.stride);
    if scratch.cols_of != Some(*g) {
        scratch.cols = (0..k).map(|kx| g.valid_cols(kx)).collect();
        scratch.cols_of = Some(*g);
    }
    let DwScratch { phases, cols, .. } = scratch;
    let (src, row_len): (&[f32], usize) = if s == 1 {
        (input, w)
    } else {
        let wq = w.div_ceil(s);
        phases.clear();
        phases.resize(s * h * wq, 0.0);
        for (iy, row) in input.chunks_exact(w).take(h).enumerate() {
            for (j, cols) in row.chunks(s).enumerate() {
                for (q, v) in cols.iter().enumerate() {
                    phases[(q * h + iy) * wq + j] = *v;
                }
            }
        }
        (&phases[..], wq)
    };
    out.fill(0.0);
    for (oy, row) in out.chunks_exact_mut(wo).enumerate() {
        for ky in 0..k {
            let iy = oy * s + ky;
            if iy < g.pad[0] || iy - g.pad[0] >= h {
                continue;
            }
            let iy = iy - g.pad[0];
            for (kx, range) in cols.iter().enumerate() {
                if range.is_empty() {
                    continue;
                }
                let wgt = weights[ky * k + kx];
                // First input column read, its phase and its index within the phase.
                let first = range.start * s + kx - g.pad[1];
                let (q, j0) = (first % s, first / s);
                let line = &src[(q * h + iy) * row_len..][..row_len];
                for (o, i) in row[range.clone()].iter_mut().zip(&line[j0..]) {
                    *o += wgt * i;
                }
            }
        }
    }
}
