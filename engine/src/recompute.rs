//! Activation recompute (gradient checkpointing): a region of the forward, such as one decoder
//! layer, that keeps only its input on the tape and rebuilds its internals during backward.
//!   forward:  y = f(None, x)                  no tape: nothing inside f is saved
//!   backward: y' = f(Some(sub), x')           x' and the region's parameters watched on a
//!             fresh sub-tape, then the incoming gradient dy walked back through it
//!             (dx, dparams) = backward of sub from y' seeded with dy
//! The tape holds one node for the region: its input x, its parameters and f. Because f is
//! deterministic (fixed chunking and reduction order on every backend), y' is bitwise y, and
//! the sub-tape walks the region's ops in the order the whole tape would have: gradients are
//! bitwise the same as without recompute, at the cost of a second forward of the region.

use crate::error::{Error, Result};
use crate::tape::{record_region, InputGrads, Op, Tape};
use crate::Tensor;
use std::sync::Arc;

/// A region's forward: the tape to record on (None in the forward pass) and its input.
pub type Region = Arc<dyn Fn(Option<&Tape>, &Tensor) -> Result<Tensor> + Send + Sync>;

pub(crate) struct Saved {
    x: Tensor,
    /// The parameters f watches, not on any tape (their ids key the gradients).
    params: Vec<Tensor>,
    f: Region,
}

/// `f(tape, x)` as one node of `tape`: the region's output, recorded with x and `params` (the
/// tensors f watches on the tape it is given) as its inputs. Without a tape on x or `tape`
/// None, it is just f(None, x).
pub fn checkpoint(tape: Option<&Tape>, x: &Tensor, params: &[Tensor], f: Region) -> Result<Tensor> {
    let Some(tape) = tape else { return f(None, x) };
    let y = f(None, &x.detach())?;
    if y.tape().is_some() {
        return Err(Error::Backward("a checkpointed region recorded on a tape of its own".into()));
    }
    let watched: Vec<Tensor> = params.iter().map(|p| tape.watch(p)).collect();
    let mut inputs = vec![x];
    inputs.extend(watched.iter());
    let params = params.iter().map(Tensor::detach).collect();
    record_region("checkpoint", tape, &inputs, &y, || Op::Checkpoint(Saved { x: x.detach(), params, f }))
}

/// Reruns the region on a sub-tape and walks `g` back through it: gradients of x and of every
/// parameter, in input order. A tensor the region watched that it was not given is an error:
/// its gradient would be lost.
pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    let sub = Tape::new();
    let x = sub.watch(&s.x);
    let y = (s.f)(Some(&sub), &x)?;
    let mut grads = crate::tape::Grads::default();
    sub.backward_seeded(&y, g, &mut grads)?;
    let mut out = Vec::with_capacity(1 + s.params.len());
    for (t, &need) in std::iter::once(&s.x).chain(&s.params).zip(needs) {
        let grad = grads.remove(t.id());
        out.push(if need { grad } else { None });
    }
    if !grads.is_empty() {
        return Err(Error::Backward(format!(
            "a checkpointed region watched {} tensor(s) it was not given as parameters",
            grads.len()
        )));
    }
    Ok(out)
}
