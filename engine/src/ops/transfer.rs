//! Moving a tensor between devices as an op: forward copies the data to the target device, and
//! the backward copies the gradient back to where the input lived. That lets a loss mix devices
//! (say DPO's few per-sequence numbers on the CPU after a GPU forward) on one tape.

use crate::error::Result;
use crate::tape::{record, InputGrads, Op};
use crate::{Device, Tensor};

pub(crate) struct Saved {
    from: Device,
}

/// `x` on `device`; the same tensor when it is already there.
pub fn to_device(x: &Tensor, device: Device) -> Result<Tensor> {
    if x.device() == device {
        return Ok(x.clone());
    }
    let from = x.device();
    let out = x.moved_storage(device)?;
    record("to_device", &[x], out, x.shape().clone(), |_| Op::Transfer(Saved { from }))
}

pub(crate) fn backward(s: &Saved, g: &Tensor) -> Result<InputGrads> {
    Ok(vec![Some(to_device(g, s.from)?)])
}
