//! Layout ops: reshape (free: same storage, new shape), dtype casts, permute (an explicit copy:
//! tensors have no general strides) and index_select along a dimension (gather forward,
//! scatter-add backward).

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::storage::CpuStorage;
use crate::tape::{record, record_view, InputGrads, Op};
use crate::{DType, Shape, Tensor};

pub(crate) enum Saved {
    Reshape { in_shape: Shape },
    Cast { from: DType },
    Permute { inverse: Vec<usize> },
    IndexSelect { dim: usize, indices: Vec<usize>, in_shape: Shape },
}

impl Tensor {
    /// The same elements with another shape of equal size. Free: no copy.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::mismatch("reshape", self.shape(), &shape, "element counts differ"));
        }
        let in_shape = self.shape().clone();
        record_view("reshape", self, shape, || Op::Layout(Saved::Reshape { in_shape }))
    }

    /// A copy in `dtype`; its gradient is cast back.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if self.needs_grad() && !dtype.is_float() {
            return Err(Error::NoBackward { op: "to_dtype (to an integer type)" });
        }
        let out: crate::storage::Storage = match self.storage() {
            crate::storage::Storage::Cuda(c) => crate::cuda::elementwise::cast(c, dtype)?.into(),
            crate::storage::Storage::Cpu(c) => c.cast(dtype).into(),
        };
        let from = self.dtype();
        record("to_dtype", &[self], out, self.shape().clone(), |_| Op::Layout(Saved::Cast { from }))
    }
}

/// Copy over an index mapping: `out[i] = x[src(i)]`, generic over any stored type.
fn gather_copy<T: Element>(x: &[T], n: usize, src: impl Fn(usize) -> usize) -> Vec<T> {
    (0..n).map(|i| x[src(i)]).collect()
}

fn remap(x: &CpuStorage, n: usize, src: impl Fn(usize) -> usize) -> CpuStorage {
    match x {
        CpuStorage::F32(v) => CpuStorage::F32(gather_copy(v, n, src)),
        CpuStorage::F64(v) => CpuStorage::F64(gather_copy(v, n, src)),
        CpuStorage::BF16(v) => CpuStorage::BF16(gather_copy(v, n, src)),
        CpuStorage::I32(v) => CpuStorage::I32(gather_copy(v, n, src)),
        CpuStorage::U32(v) => CpuStorage::U32(gather_copy(v, n, src)),
    }
}

/// Dimensions reordered: output dim i is input dim `perm[i]`. An explicit copy.
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let r = x.rank();
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
        return Err(Error::bad_shape(
            "permute",
            x.shape(),
            format!("{perm:?} is not a permutation of its dims"),
        ));
    }
    let in_strides = x.shape().strides();
    let out_dims: Vec<usize> = perm.iter().map(|&p| x.dims()[p]).collect();
    let out_shape = Shape::from(out_dims.clone());
    let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let out = remap(x.cpu("permute")?, x.elem_count(), |mut i| {
        let mut s = 0;
        for d in (0..r).rev() {
            s += (i % out_dims[d]) * src_strides[d];
            i /= out_dims[d];
        }
        s
    });
    let mut inverse = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    record("permute", &[x], out, out_shape, |_| Op::Layout(Saved::Permute { inverse }))
}

/// Picks `indices` along `dim`: out has `indices.len()` there. Indices may repeat (GQA's
/// head sharing); the backward adds their gradients.
pub fn index_select(x: &Tensor, dim: usize, indices: &[usize]) -> Result<Tensor> {
    if dim >= x.rank() {
        return Err(Error::bad_shape("index_select", x.shape(), format!("no dim {dim}")));
    }
    let size = x.dims()[dim];
    if let Some((pos, &bad)) = indices.iter().enumerate().find(|(_, &i)| i >= size) {
        return Err(Error::IndexOutOfRange {
            op: "index_select",
            index: bad as i64,
            bound: size,
            position: pos,
        });
    }
    let outer: usize = x.dims()[..dim].iter().product();
    let inner: usize = x.dims()[dim + 1..].iter().product();
    let k = indices.len();
    let mut out_dims = x.dims().to_vec();
    out_dims[dim] = k;
    let out = remap(x.cpu("index_select")?, outer * k * inner, |i| {
        let (o, rest) = (i / (k * inner), i % (k * inner));
        let (j, e) = (rest / inner, rest % inner);
        (o * size + indices[j]) * inner + e
    });
    let saved = || Saved::IndexSelect { dim, indices: indices.to_vec(), in_shape: x.shape().clone() };
    record("index_select", &[x], out, Shape::from(out_dims), |_| Op::Layout(saved()))
}

fn scatter_add(g: &[f64], in_shape: &Shape, dim: usize, indices: &[usize]) -> Vec<f64> {
    let size = in_shape.dims()[dim];
    let outer: usize = in_shape.dims()[..dim].iter().product();
    let inner: usize = in_shape.dims()[dim + 1..].iter().product();
    let k = indices.len();
    let mut out = vec![0.0; in_shape.elem_count()];
    for o in 0..outer {
        for (j, &src) in indices.iter().enumerate() {
            for e in 0..inner {
                out[(o * size + src) * inner + e] += g[(o * k + j) * inner + e];
            }
        }
    }
    out
}

pub(crate) fn backward(s: &Saved, g: &Tensor) -> Result<InputGrads> {
    let gx = match s {
        Saved::Reshape { in_shape } => g.reshape(in_shape.clone())?,
        Saved::Cast { from } => g.to_dtype(*from)?,
        Saved::Permute { inverse } => permute(g, inverse)?,
        Saved::IndexSelect { dim, indices, in_shape } => {
            let v = scatter_add(&g.to_vec_f64()?, in_shape, *dim, indices);
            Tensor::from_cpu(CpuStorage::F64(v).cast(g.dtype()), in_shape.clone())
        }
    };
    Ok(vec![Some(gx)])
}
