//! Shared helpers of the collectives' tests: a torchrun place without a launcher, and a round
//! of gradient buckets reduced the way the trainer reduces them (every bucket started, the comm
//! stream settled, each finished), so each test only says what the sums must be.
#![allow(dead_code)]

use solar_engine::comm::{plan_buckets, Bucket, Comm, Launcher, Place};
use solar_engine::{DType, Device, Tensor};

/// Rank 0 of a torchrun world of `size`, its rendezvous (if any) on 127.0.0.1:`port`.
pub fn torchrun_place(size: usize, port: Option<u16>) -> Place {
    Place {
        launcher: Launcher::Torchrun,
        rank: 0,
        size,
        local_rank: 0,
        local_size: None,
        master: port.map(|p| ("127.0.0.1".into(), p)),
    }
}

/// bf16 gradients of `lens` elements (`grad(i)` is gradient i on `device`) in 64-byte buckets
/// (several, one member longer than the cap alone), reduced as ZeRO-0 reduces: each bucket's
/// layout with (its all-gathered sums, this rank's reduce-scatter result).
pub fn reduce_in_buckets(
    w: &Comm,
    lens: &[usize],
    device: Device,
    grad: impl Fn(usize) -> Tensor,
) -> Vec<(Bucket, Tensor, Tensor)> {
    let grads: Vec<(usize, DType)> = lens.iter().map(|&n| (n, DType::BF16)).collect();
    let order: Vec<usize> = (0..lens.len()).rev().collect();
    let buckets = plan_buckets(&grads, &order, w.rank(), w.size(), 64);
    assert!(buckets.len() > 1);
    let flights: Vec<_> = buckets
        .iter()
        .map(|b| {
            let mine: Vec<_> = b.members.iter().map(|&i| Some(grad(i))).collect();
            b.start(w, b.pack(&mine, device).unwrap(), true).unwrap()
        })
        .collect();
    w.settle().unwrap();
    buckets
        .into_iter()
        .zip(flights)
        .map(|(b, flight)| {
            let (bucket, piece) = flight.finish().unwrap();
            (b, bucket, piece)
        })
        .collect()
}
