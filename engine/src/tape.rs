//! The tape: a list of the ops recorded while computing a loss, each with what its backward
//! needs. `backward` walks it in reverse and accumulates (`+=`) gradients keyed by tensor id, so
//! a parameter used twice, or gradients summed over micro-batches, just work.
//!
//! A tensor is on a tape when it was watched (`Tape::watch`) or computed from one that is.
//! Ops on tensors with no tape record nothing (inference, reference log-probs). Saved tensors
//! are stored detached, so the tape never owns a handle to itself.

use crate::error::{Error, Result};
use crate::ops::{
    attention, binary, cross_entropy, embedding, layout, linear_cross_entropy, logprob, matmul, reduce,
    rmsnorm, rope, softmax, swiglu, transfer, unary,
};
use crate::recompute;
use crate::storage::Storage;
use crate::tensor::{Tensor, TensorId};
use crate::Shape;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// What an op saved for its backward. One variant per op family (enum dispatch).
pub(crate) enum Op {
    Matmul(matmul::Saved),
    Binary(binary::Saved),
    Unary(unary::Saved),
    Reduce(reduce::Saved),
    Layout(layout::Saved),
    Embedding(embedding::Saved),
    RmsNorm(rmsnorm::Saved),
    Rope(rope::Saved),
    Attention(attention::Saved),
    SwiGlu(swiglu::Saved),
    Softmax(softmax::Saved),
    CrossEntropy(cross_entropy::Saved),
    LinearCrossEntropy(linear_cross_entropy::Saved),
    LogProb(logprob::Saved),
    Transfer(transfer::Saved),
    /// A recomputed region (recompute.rs): its input, parameters and forward.
    Checkpoint(recompute::Saved),
}

/// Gradients of the inputs, in input order; `None` where an input needs none.
pub(crate) type InputGrads = Vec<Option<Tensor>>;

fn backward_of(op: &Op, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    match op {
        Op::Matmul(s) => matmul::backward(s, g, needs),
        Op::Binary(s) => binary::backward(s, g, needs),
        Op::Unary(s) => unary::backward(s, g),
        Op::Reduce(s) => reduce::backward(s, g),
        Op::Layout(s) => layout::backward(s, g),
        Op::Embedding(s) => embedding::backward(s, g, needs),
        Op::RmsNorm(s) => rmsnorm::backward(s, g, needs),
        Op::Rope(s) => rope::backward(s, g),
        Op::Attention(s) => attention::backward(s, g, needs),
        Op::SwiGlu(s) => swiglu::backward(s, g, needs),
        Op::Softmax(s) => softmax::backward(s, g),
        Op::CrossEntropy(s) => cross_entropy::backward(s, g),
        Op::LinearCrossEntropy(s) => linear_cross_entropy::backward(s, g, needs),
        Op::LogProb(s) => logprob::backward(s, g),
        Op::Transfer(s) => transfer::backward(s, g),
        Op::Checkpoint(s) => recompute::backward(s, g, needs),
    }
}

struct Node {
    output: TensorId,
    /// Each input's id and whether it needs a gradient.
    inputs: Vec<(TensorId, bool)>,
    op: Op,
}

#[derive(Default)]
struct TapeInner {
    nodes: Vec<Node>,
    leaves: HashSet<TensorId>,
    consumed: bool,
}

#[derive(Clone, Default)]
pub struct Tape(Arc<Mutex<TapeInner>>);

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    /// `t` (same data, same id) recorded on this tape as a leaf whose gradient `backward`
    /// returns. Watching the same tensor twice gives the same id, so gradients add up.
    pub fn watch(&self, t: &Tensor) -> Tensor {
        self.0.lock().unwrap().leaves.insert(t.id());
        t.with_tape(self.clone())
    }

    /// Number of recorded ops.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn same(&self, other: &Tape) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Gradients of the scalar `loss` with respect to every watched tensor.
    pub fn backward(&self, loss: &Tensor) -> Result<Grads> {
        let mut grads = Grads::default();
        self.backward_into(loss, &mut grads)?;
        Ok(grads)
    }

    /// Like `backward`, adding into `grads` (gradient accumulation over micro-batches).
    /// The tape is consumed: its saved tensors are freed as it is walked.
    pub fn backward_into(&self, loss: &Tensor, grads: &mut Grads) -> Result<()> {
        if loss.elem_count() != 1 {
            return Err(Error::Backward(format!("the loss must be a scalar, got shape {}", loss.shape())));
        }
        self.backward_notifying(loss, grads, &mut |_, _| Ok(()))
    }

    /// Like `backward_into`, calling `ready(id, grads)` as soon as a watched tensor's gradient
    /// for this loss is complete: after the walk passes the first op that read it, nothing can
    /// add to it any more. Data parallel ranks reduce it there and drop it (ZeRO-2), so the
    /// whole model's gradients never exist at once. Gradients are the same as `backward_into`'s.
    pub fn backward_notifying(
        &self,
        loss: &Tensor,
        grads: &mut Grads,
        ready: &mut dyn FnMut(TensorId, &mut Grads) -> Result<()>,
    ) -> Result<()> {
        if loss.elem_count() != 1 {
            return Err(Error::Backward(format!("the loss must be a scalar, got shape {}", loss.shape())));
        }
        let seed = Tensor::ones(loss.shape().clone(), loss.dtype()).to_device(loss.device())?;
        self.walk(loss, &seed, grads, ready)
    }

    /// Walks the tape back from `output` (any shape) whose gradient is `seed`, adding into
    /// `grads`; a recomputed region's backward walks its sub-tape this way.
    pub(crate) fn backward_seeded(&self, output: &Tensor, seed: &Tensor, grads: &mut Grads) -> Result<()> {
        self.walk(output, seed, grads, &mut |_, _| Ok(()))
    }

    fn walk(
        &self,
        output: &Tensor,
        seed: &Tensor,
        grads: &mut Grads,
        ready: &mut dyn FnMut(TensorId, &mut Grads) -> Result<()>,
    ) -> Result<()> {
        match output.tape() {
            Some(t) if t.same(self) => {}
            _ => return Err(Error::Backward("the loss was not computed on this tape".into())),
        }
        if seed.dims() != output.dims() {
            return Err(Error::Backward(format!(
                "a gradient of shape {} for an output of shape {}",
                seed.shape(),
                output.shape()
            )));
        }
        let (nodes, leaves) = {
            let mut inner = self.0.lock().unwrap();
            if inner.consumed {
                return Err(Error::Backward("this tape was already walked backward".into()));
            }
            inner.consumed = true;
            (std::mem::take(&mut inner.nodes), inner.leaves.clone())
        };
        // The first op reading each watched tensor: its gradient is complete once the walk
        // back has passed that op.
        let mut first_reader: HashMap<usize, Vec<TensorId>> = HashMap::new();
        let mut seen: HashSet<TensorId> = HashSet::new();
        for (k, node) in nodes.iter().enumerate() {
            for &(id, need) in &node.inputs {
                if need && leaves.contains(&id) && seen.insert(id) {
                    first_reader.entry(k).or_default().push(id);
                }
            }
        }
        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(output.id(), seed.detach());
        for (k, node) in nodes.into_iter().enumerate().rev() {
            let complete = first_reader.remove(&k).unwrap_or_default();
            let Some(g) = pending.remove(&node.output) else {
                for id in complete {
                    ready(id, grads)?;
                }
                continue;
            };
            let needs: Vec<bool> = node.inputs.iter().map(|&(_, n)| n).collect();
            let input_grads = backward_of(&node.op, &g, &needs)?;
            for (&(id, need), grad) in node.inputs.iter().zip(input_grads) {
                let (true, Some(grad)) = (need, grad) else { continue };
                if leaves.contains(&id) {
                    grads.accumulate(id, grad)?;
                } else {
                    accumulate(&mut pending, id, grad)?;
                }
            }
            for id in complete {
                ready(id, grads)?;
            }
        }
        Ok(())
    }
}

fn accumulate(map: &mut HashMap<TensorId, Tensor>, id: TensorId, g: Tensor) -> Result<()> {
    let sum = match map.remove(&id) {
        Some(prev) => binary::add_untracked(&prev, &g)?,
        None => g,
    };
    map.insert(id, sum);
    Ok(())
}

/// Gradients keyed by tensor id. Adding into an existing entry sums (`+=`).
#[derive(Default, Debug)]
pub struct Grads(HashMap<TensorId, Tensor>);

impl Grads {
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }
    pub fn get_id(&self, id: TensorId) -> Option<&Tensor> {
        self.0.get(&id)
    }
    pub fn insert(&mut self, id: TensorId, g: Tensor) {
        self.0.insert(id, g.detach());
    }
    pub fn remove(&mut self, id: TensorId) -> Option<Tensor> {
        self.0.remove(&id)
    }
    pub fn accumulate(&mut self, id: TensorId, g: Tensor) -> Result<()> {
        accumulate(&mut self.0, id, g.detach())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn clear(&mut self) {
        self.0.clear()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&TensorId, &Tensor)> {
        self.0.iter()
    }
}

/// The tape shared by `inputs`, if any; two different tapes are an error.
fn common_tape(op: &'static str, inputs: &[&Tensor]) -> Result<Option<Tape>> {
    let mut found: Option<&Tape> = None;
    for t in inputs {
        if let Some(tp) = t.tape() {
            match found {
                Some(f) if !f.same(tp) => return Err(Error::TwoTapes { op }),
                _ => found = Some(tp),
            }
        }
    }
    Ok(found.cloned())
}

/// Wraps an op's result (CPU or CUDA storage) as its output tensor and, when an input is on a tape, records the
/// op there. `saved` gets the (detached) output and is called only when recording.
pub(crate) fn record(
    op: &'static str,
    inputs: &[&Tensor],
    out: impl Into<Storage>,
    shape: Shape,
    saved: impl FnOnce(&Tensor) -> Op,
) -> Result<Tensor> {
    let out = out.into();
    match common_tape(op, inputs)? {
        None => Ok(Tensor::from_parts(out, shape, None)),
        Some(tape) => {
            let y = Tensor::from_parts(out, shape, Some(tape.clone()));
            let node = Node {
                output: y.id(),
                inputs: inputs.iter().map(|x| (x.id(), x.needs_grad())).collect(),
                op: saved(&y.detach()),
            };
            tape.0.lock().unwrap().nodes.push(node);
            Ok(y)
        }
    }
}

/// Records `y`, computed off the tape, as the output of a node of `tape` with `inputs` (a
/// recomputed region): the same data under a fresh id, on the tape.
pub(crate) fn record_region(
    op: &'static str,
    tape: &Tape,
    inputs: &[&Tensor],
    y: &Tensor,
    saved: impl FnOnce() -> Op,
) -> Result<Tensor> {
    if inputs.iter().any(|x| x.tape().is_some_and(|t| !t.same(tape))) {
        return Err(Error::TwoTapes { op });
    }
    let out = y.view_as(y.shape().clone(), Some(tape.clone()));
    let node = Node {
        output: out.id(),
        inputs: inputs.iter().map(|x| (x.id(), x.needs_grad())).collect(),
        op: saved(),
    };
    tape.0.lock().unwrap().nodes.push(node);
    Ok(out)
}

/// Records a view (same storage, new shape) as an op, for reshape.
pub(crate) fn record_view(
    op: &'static str,
    x: &Tensor,
    shape: Shape,
    saved: impl FnOnce() -> Op,
) -> Result<Tensor> {
    match x.tape() {
        None => Ok(x.view_as(shape, None)),
        Some(tape) => {
            let y = x.view_as(shape, Some(tape.clone()));
            let node = Node { output: y.id(), inputs: vec![(x.id(), true)], op: saved() };
            let _ = op;
            tape.0.lock().unwrap().nodes.push(node);
            Ok(y)
        }
    }
}

/// For ops with no backward: refuses inputs that need a gradient.
pub(crate) fn ensure_no_grad(op: &'static str, inputs: &[&Tensor]) -> Result<()> {
    if inputs.iter().any(|t| t.needs_grad()) {
        return Err(Error::NoBackward { op });
    }
    Ok(())
}
