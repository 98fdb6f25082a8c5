//! Vectorised CPU kernels for the models' forward pass, written as if for burn-flex: small,
//! documented, each tested against a scalar reference (`tests/`) and benchmarked
//! (`benches/kernels.rs` in `silencio-benches`).
//!
//! Two layers:
//! - slice kernels ([`act`], [`plane`]), independent of Burn;
//! - tensor entry points that run them on float32 flex tensors outside autodiff, in place when
//!   a buffer is not shared (Burn 0.22's backend extension API:
//!   `Tensor::try_into_primitive::<Flex>()` / `from_primitive`). [`silu`] and [`sigmoid`] fall
//!   back to Burn's op by themselves; [`batch_norm_act`], [`squeeze_excitation`],
//!   [`depthwise_conv2d`] and [`depthwise_conv2d_bn_act`] return `Err(x)` for the caller's
//!   module code to run instead — on
//!   wgpu, CUDA, under autodiff (training), for other dtypes — so models call them
//!   unconditionally.
//!
//! Parameters (weights, batch-norm scale and shift) come as host slices: a model prepared for
//! inference keeps them from load time, so no forward copies them out of its tensors.

// `Err(x)` hands the input tensor back for the caller's fallback: both variants are the same
// 256-byte `Tensor`, and boxing it would allocate on every layer call.
#![allow(clippy::result_large_err)]

pub mod act;
pub mod plane;

pub use plane::DwGeometry;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Tensor;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fast paths on or off for the whole process (on by default). Off, every entry point
/// runs Burn's ops: benchmarks compare both in one run, and a user can rule the kernels out.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the fast paths are on (see [`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the kernels take `x`: a float32 flex tensor outside autodiff, kernels enabled.
/// Callers check it before preparing a kernel's arguments (reading parameters back from a GPU
/// would stall it).
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    return enabled() && flex::is_plain(x);
    #[cfg(not(feature = "flex"))]
    {
        let _ = x;
        false
    }
}

/// The values of `t` as float32 on the host (a copy; empty if they cannot be read): how callers
/// hand parameters to the kernels. It reads a GPU tensor back, so check [`applies`] first.
pub fn host_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// Whether `device` is flex (the CPU backend), outside autodiff: where the kernels run, and
/// where batching windows does not pay (see `silencio_server::config::default_max_batch`).
pub fn is_flex(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "flex")]
    return flex::is_plain(&Tensor::<1>::zeros([1], device));
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// `f(x)` on a worker thread of rayon's current pool when `x` takes the kernels (a float32 flex
/// tensor outside autodiff), else here. Called around a whole forward pass: its hundred-odd
/// parallel loops (flex's GEMM, these kernels) then start from inside the pool, instead of each
/// waking the pool from outside and sleeping until it is done — ~15 % of a batch-1
/// EfficientNet-B0 forward on 2 cores. Already on a worker (a server replica), it runs in place.
pub fn in_pool<const D: usize, R: Send>(x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> R + Send) -> R {
    #[cfg(feature = "flex")]
    if applies(&x) {
        return rayon::scope(move |_| f(x));
    }
    f(x)
}

/// SiLU `x · sigmoid(x)` (see [`act`] for its accuracy on flex).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::map_in_place(x, act::silu_in_place) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::activation::silu(x)
}

/// Logistic sigmoid (see [`act`] for its accuracy on flex).
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::map_in_place(x, act::sigmoid_in_place) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::activation::sigmoid(x)
}

/// `act(x · scale[c] + shift[c])` for every channel `c` of an NCHW tensor, in one pass: a batch
/// norm at inference with its activation. `Err(x)` off the flex fast path.
pub fn batch_norm_act<F>(
    x: Tensor<4>,
    scale: &[f32],
    shift: &[f32],
    act: F,
) -> Result<Tensor<4>, Tensor<4>>
where
    F: Fn(f32) -> f32 + Copy + Send + Sync,
{
    #[cfg(feature = "flex")]
    return flex::batch_norm_act(x, scale, shift, act);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (scale, shift, act);
        Err(x)
    }
}

/// The weights of a squeeze-and-excitation block, on the host, as [`squeeze_excitation`] reads
/// them (torchvision's `fc1`/`fc2` 1×1 convolutions, row-major).
#[derive(Debug, Clone, Copy)]
pub struct SeWeights<'a> {
    /// Reduce, `[C_sq, C]`.
    pub w1: &'a [f32],
    /// Its bias, `[C_sq]`.
    pub b1: &'a [f32],
    /// Expand, `[C, C_sq]`.
    pub w2: &'a [f32],
    /// Its bias, `[C]`.
    pub b2: &'a [f32],
}

impl SeWeights<'_> {
    /// `(C, C_sq)` when the four slices agree with each other.
    pub fn dims(&self) -> Option<(usize, usize)> {
        let (sq, c) = (self.b1.len(), self.b2.len());
        (sq > 0 && c > 0 && self.w1.len() == sq * c && self.w2.len() == c * sq).then_some((c, sq))
    }
}

/// Squeeze-and-excitation (Hu et al. 2018) at inference, as torchvision's: per image,
/// `s = sigmoid(W₂ · silu(W₁ · mean_hw(x) + b₁) + b₂)`, then `x[c] ← x[c] · s[c]`.
/// `Err(x)` off the flex fast path or when the weights do not fit `x`.
pub fn squeeze_excitation(x: Tensor<4>, se: SeWeights<'_>) -> Result<Tensor<4>, Tensor<4>> {
    #[cfg(feature = "flex")]
    return flex::squeeze_excitation(x, se);
    #[cfg(not(feature = "flex"))]
    {
        let _ = se;
        Err(x)
    }
}

/// Depthwise 2-D convolution (one `k × k` filter per channel: `weight` holds `[C, 1, k, k]`
/// row-major, no bias) with `stride` and zero padding `[[top, bottom], [left, right]]`.
/// `Err(x)` off the flex fast path or when the weight does not fit `x`.
pub fn depthwise_conv2d(
    x: Tensor<4>,
    weight: &[f32],
    k: usize,
    stride: usize,
    pad: [[usize; 2]; 2],
) -> Result<Tensor<4>, Tensor<4>> {
    let c = x.dims()[1];
    depthwise_conv2d_bn_act(
        x,
        weight,
        k,
        stride,
        pad,
        &vec![1.0; c],
        &vec![0.0; c],
        |v| v,
    )
}

/// [`depthwise_conv2d`] followed by [`batch_norm_act`]'s `act(y · scale[c] + shift[c])`, applied
/// to each output plane while it is still in cache (one pass over memory fewer).
// One argument per kernel parameter, as Burn's own conv ops take them.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d_bn_act<F>(
    x: Tensor<4>,
    weight: &[f32],
    k: usize,
    stride: usize,
    pad: [[usize; 2]; 2],
    scale: &[f32],
    shift: &[f32],
    act: F,
) -> Result<Tensor<4>, Tensor<4>>
where
    F: Fn(f32) -> f32 + Copy + Send + Sync,
{
    #[cfg(feature = "flex")]
    return flex::depthwise_conv2d_bn_act(x, weight, k, stride, pad, scale, shift, act);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (weight, k, stride, pad, scale, shift, act);
        Err(x)
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::tensor::{DType, Tensor};
    use burn_flex::{Flex, FlexTensor};

    /// Elements per parallel task: large enough to amortise a rayon task (~µs), small enough
    /// that two cores share a layer's activations evenly.
    const CHUNK: usize = 1 << 14;

    /// Whether `t` is a float32 flex tensor outside autodiff. The probe's handle is dropped
    /// before returning, so that the buffer's reference count is the caller's again.
    pub(crate) fn is_plain<const D: usize>(t: &Tensor<D>) -> bool {
        t.clone()
            .try_into_primitive::<Flex>()
            .is_ok_and(|f| f.dtype() == DType::F32)
    }

    /// The contiguous flex tensor of `t` (which [`is_plain`] accepted); `Err(t)` if it is not
    /// plain after all.
    pub(crate) fn take<const D: usize>(t: Tensor<D>) -> Result<FlexTensor, Tensor<D>> {
        if !super::enabled() || !is_plain(&t) {
            return Err(t);
        }
        // The probe succeeded, so the conversion does; `to_contiguous` shares the buffer when
        // it is already dense from offset 0.
        match t.try_into_primitive::<Flex>() {
            Ok(f) => Ok(f.to_contiguous()),
            Err(e) => unreachable!("a probed flex tensor failed to convert: {e:?}"),
        }
    }

    /// `kernel` over every element of `x`, in parallel chunks, in place unless the buffer is
    /// shared (then copied once); `Err(x)` when `x` is not a plain flex tensor.
    pub(crate) fn map_in_place<const D: usize>(
        x: Tensor<D>,
        kernel: fn(&mut [f32]),
    ) -> Result<Tensor<D>, Tensor<D>> {
        use rayon::prelude::*;
        let mut f = take(x)?;
        let n = f.layout().num_elements();
        let data = &mut f.storage_mut::<f32>()[..n];
        if n <= CHUNK {
            kernel(data);
        } else {
            data.par_chunks_mut(CHUNK).for_each(kernel);
        }
        Ok(Tensor::from_primitive::<Flex>(f))
    }

    /// Elements per parallel task of the plane kernels: late EfficientNet layers have planes of
    /// 40 values, far too small for a task each (~1 µs of rayon and dispatch overhead).
    const TASK: usize = 1 << 14;

    /// Tasks per thread at least, when a layer is small: with 2 threads, a layer of 3 tasks
    /// keeps one thread idle a third of the time (batch 1 is mostly such layers).
    const TASKS_PER_THREAD: usize = 4;

    /// Planes per parallel task for `planes` planes of `plane` values: about [`TASK`] values,
    /// fewer when that would leave fewer than [`TASKS_PER_THREAD`] tasks per thread.
    fn planes_per_task(planes: usize, plane: usize) -> usize {
        let balanced = planes.div_ceil(TASKS_PER_THREAD * rayon::current_num_threads());
        (TASK / plane.max(1)).min(balanced).max(1)
    }

    /// `f(first_plane_index, planes)` over `[B, C, H, W]` data cut into whole planes of `plane`
    /// values, several planes per parallel task.
    fn for_planes_mut(data: &mut [f32], plane: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        use rayon::prelude::*;
        let plane = plane.max(1);
        let per_task = planes_per_task(data.len() / plane, plane);
        data.par_chunks_mut(per_task * plane)
            .enumerate()
            .for_each(|(t, chunk)| f(t * per_task, chunk));
    }

    pub(crate) fn batch_norm_act<F>(
        x: Tensor<4>,
        scale: &[f32],
        shift: &[f32],
        act: F,
    ) -> Result<Tensor<4>, Tensor<4>>
    where
        F: Fn(f32) -> f32 + Copy + Send + Sync,
    {
        let [_, c, h, w] = x.dims();
        if scale.len() != c || shift.len() != c {
            return Err(x);
        }
        let mut f = take(x)?;
        let n = f.layout().num_elements();
        let plane = (h * w).max(1);
        for_planes_mut(&mut f.storage_mut::<f32>()[..n], plane, |first, chunk| {
            crate::plane::vectorized(
                #[inline(always)]
                || {
                    for (j, p) in chunk.chunks_exact_mut(plane).enumerate() {
                        let ch = (first + j) % c;
                        crate::plane::affine_act(p, scale[ch], shift[ch], act);
                    }
                },
            );
        });
        Ok(Tensor::from_primitive::<Flex>(f))
    }

    pub(crate) fn squeeze_excitation(
        x: Tensor<4>,
        se: crate::SeWeights<'_>,
    ) -> Result<Tensor<4>, Tensor<4>> {
        use crate::plane::{dot, sum, vectorized};
        use rayon::prelude::*;
        let [b, c, h, w] = x.dims();
        let crate::SeWeights { w1, b1, w2, b2 } = se;
        let Some((c1, sq)) = se.dims() else {
            return Err(x);
        };
        if c1 != c {
            return Err(x);
        }
        let mut f = take(x)?;
        let n = f.layout().num_elements();
        let data = &mut f.storage_mut::<f32>()[..n];
        let plane = h * w;
        // Squeeze: the mean of every plane.
        let per_task = planes_per_task(b * c, plane);
        let means: Vec<f32> = data
            .par_chunks(per_task * plane.max(1))
            .flat_map_iter(|chunk| {
                vectorized(
                    #[inline(always)]
                    || {
                        chunk
                            .chunks(plane.max(1))
                            .map(|p| sum(p) / plane as f32)
                            .collect::<Vec<f32>>()
                    },
                )
            })
            .collect();
        // Excite: two small matrix-vector products per image.
        let mut scales = Vec::with_capacity(b * c);
        for m in means.chunks_exact(c) {
            let hidden: Vec<f32> = w1
                .chunks_exact(c)
                .zip(b1)
                .map(|(row, bias)| {
                    crate::act::silu(
                        vectorized(
                            #[inline(always)]
                            || dot(row, m),
                        ) + bias,
                    )
                })
                .collect();
            scales.extend(w2.chunks_exact(sq).zip(b2).map(|(row, bias)| {
                crate::act::sigmoid(
                    vectorized(
                        #[inline(always)]
                        || dot(row, &hidden),
                    ) + bias,
                )
            }));
        }
        // Scale every plane in place.
        for_planes_mut(data, plane, |first, chunk| {
            vectorized(
                #[inline(always)]
                || {
                    for (j, p) in chunk.chunks_exact_mut(plane.max(1)).enumerate() {
                        let s = scales[first + j];
                        p.iter_mut().for_each(|v| *v *= s);
                    }
                },
            );
        });
        Ok(Tensor::from_primitive::<Flex>(f))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn depthwise_conv2d_bn_act<F>(
        x: Tensor<4>,
        weight: &[f32],
        k: usize,
        stride: usize,
        pad: [[usize; 2]; 2],
        scale: &[f32],
        shift: &[f32],
        act: F,
    ) -> Result<Tensor<4>, Tensor<4>>
    where
        F: Fn(f32) -> f32 + Copy + Send + Sync,
    {
        use burn_flex::Layout;
        use rayon::prelude::*;
        let [b, c, h, w] = x.dims();
        if weight.len() != c * k * k || stride == 0 || k == 0 || h == 0 || w == 0 {
            return Err(x);
        }
        if scale.len() != c || shift.len() != c {
            return Err(x);
        }
        let g = crate::plane::DwGeometry::new([h, w], k, stride, pad);
        if h + pad[0][0] + pad[0][1] < k || w + pad[1][0] + pad[1][1] < k {
            return Err(x);
        }
        let input = take(x)?;
        let src = input.storage::<f32>();
        let [ho, wo] = g.output;
        let mut out = vec![0.0f32; b * c * ho * wo];
        let per_task = planes_per_task(b * c, ho * wo);
        out.par_chunks_mut(per_task * ho * wo)
            .zip(src.par_chunks(per_task * h * w))
            .enumerate()
            .for_each(|(t, (outs, ins))| {
                let mut scratch = crate::plane::DwScratch::default();
                crate::plane::vectorized(
                    #[inline(always)]
                    || {
                        let planes = outs.chunks_exact_mut(ho * wo).zip(ins.chunks_exact(h * w));
                        for (j, (o, p)) in planes.enumerate() {
                            let ch = (t * per_task + j) % c;
                            let kw = &weight[ch * k * k..][..k * k];
                            crate::plane::depthwise_plane(p, kw, &g, o, &mut scratch);
                            crate::plane::affine_act(o, scale[ch], shift[ch], act);
                        }
                    },
                );
            });
        Ok(Tensor::from_primitive::<Flex>(FlexTensor::new(
            burn::tensor::Bytes::from_elems(out),
            Layout::contiguous(burn::tensor::Shape::new([b, c, ho, wo])),
            DType::F32,
        )))
    }
}
