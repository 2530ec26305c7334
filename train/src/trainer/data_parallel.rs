//! Data parallel training over the ranks of a job (solar_engine::comm), with ZeRO stages 0-2.
//!
//! Every rank draws the same global step (the rows one process would train on, same seed,
//! same order) and runs its contiguous slice of it (`rank_rows`). Each micro-batch's summed
//! loss is scaled by 1/(the step's global count), so summing the ranks' gradients gives
//! exactly the gradient of the step's mean, as one process computes it.
//!
//! Gradients are reduced during the backward, in buckets (solar_engine::comm::Bucket): as soon
//! as the tape says every gradient of a bucket is complete, the bucket is packed and its
//! collective started (on a GPU on the comm stream, overlapped with the rest of the backward),
//! and the whole gradients in it dropped. Every rank plans the same buckets and starts them in
//! the same order (the reverse of the parameter order), whatever order its own backward
//! finishes them in. At the end of the micro-batch the host waits for the comm stream (under
//! the watchdog) and every bucket's sums are unpacked.
//!
//! - ZeRO-0: buckets are all-reduced; every rank updates every parameter (DDP). Reduced in the
//!   step's last micro-batch round only (DDP's no_sync before it).
//! - ZeRO-1: buckets are reduce-scattered, in the last round; a rank keeps the AdamW moments
//!   (and on CUDA the f32 master weights) of its shard of each parameter only, updates that
//!   shard, and the weights are all-gathered back into every rank's full copy.
//! - ZeRO-2: as ZeRO-1, reduced in every round, so across gradient accumulation a rank holds
//!   only its shards' sums, and within a backward only the gradients of buckets not yet
//!   complete. Ranks with fewer micro-batches add rounds of zeros, so the collectives pair up.
//!
//! Reductions add in a fixed order (rank order over MPI, NCCL's own), and the gradient norm is
//! summed per shard in shard order at every stage, so ZeRO-0 and ZeRO-1 give the same weights
//! bit for bit; ZeRO-2 adds micro-batches in another order when a rank runs more than one.
//!
//! Checkpoints stay whole: moments are gathered before rank 0 writes them, so a run saved by
//! N ranks resumes on any number of ranks, or as one process.

use super::objective::{GradEvent, Objective, StepLoss, StepSplit};
use crate::error::{Result, TrainError};
use solar_engine::comm::{flat_piece, plan_buckets, shard_range, Bucket, Comm, InFlight};
use solar_engine::ops;
use solar_engine::optim::{grad_sum_squares, AdamW, Moments};
use solar_engine::{DType, Grads, Tensor, TensorId};
use solar_model::names::is_norm;
use solar_model::Llama;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

/// The job this run is one rank of, and the ZeRO stage.
#[derive(Clone, Copy)]
pub struct Dist {
    pub comm: &'static Comm,
    pub zero: u8,
    /// The most bytes a gradient bucket sums (`--bucket-mb`).
    pub bucket_bytes: usize,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dist(rank {} of {}, ZeRO-{})", self.comm.rank(), self.comm.size(), self.zero)
    }
}

impl Dist {
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    pub fn size(&self) -> usize {
        self.comm.size()
    }
    pub fn is_leader(&self) -> bool {
        self.comm.rank() == 0
    }
}

/// The rows of an `n`-row step that `rank` of `size` runs: contiguous, sizes differing by at
/// most one, in rank order.
pub fn rank_rows(n: usize, rank: usize, size: usize) -> Range<usize> {
    let (q, r) = (n / size, n % size);
    let start = rank * q + rank.min(r);
    start..start + q + usize::from(rank < r)
}

/// One rank's data parallel state across the run.
pub struct DataParallel {
    pub dist: Dist,
    /// ZeRO-1/2: this rank's shard of each trainable parameter, in `trainable_params` order
    /// (None where the shard is empty). AdamW keys their state by these tensors' ids.
    shards: Vec<Option<Tensor>>,
    /// The step's reduced gradients so far, in `trainable_params` order: whole (ZeRO-0) or
    /// this rank's shards (ZeRO-1/2).
    summed: Vec<Option<Tensor>>,
    /// The gradient buckets, in the order they are reduced (planned once, the same on every
    /// rank).
    buckets: Vec<Bucket>,
    /// This micro-batch: which gradients are complete, the next bucket to start, and the
    /// started ones not yet unpacked (bucket index, reduction).
    complete: Vec<bool>,
    next_bucket: usize,
    in_flight: VecDeque<(usize, InFlight)>,
    /// The step's micro-batch rounds, and how many have ended.
    rounds: usize,
    round: usize,
    /// Trainable parameters by tensor id (what the tape reports).
    index: HashMap<TensorId, usize>,
    /// Whether this rank's rows gave each parameter a gradient this step. A parameter no rank
    /// has a gradient for is not updated, as one process skips it.
    present: Vec<bool>,
    /// Whether each parameter has AdamW moments (was updated, or resumed with them): the same
    /// on every rank, so all join or all skip its gathers.
    has_moments: Vec<bool>,
}

impl DataParallel {
    /// Cuts this rank's shards out of `model`; moments `opt` already holds (a resumed
    /// checkpoint's, whole) are cut the same way and the whole ones dropped.
    pub fn new(dist: Dist, model: &Llama, opt: &mut AdamW) -> Result<DataParallel> {
        let (mut shards, mut has_moments) = (Vec::new(), Vec::new());
        for (_, p) in model.trainable_params() {
            has_moments.push(opt.moments(p.id()).is_some());
            if dist.zero == 0 {
                shards.push(None);
                continue;
            }
            let r = shard_range(p.elem_count(), dist.rank(), dist.size());
            let whole = opt.take_moments(p.id());
            let master = opt.take_master(p.id());
            if r.is_empty() {
                shards.push(None);
                continue;
            }
            let shard = flat_piece(p, r.clone())?;
            if let Some(Moments { m, v }) = whole {
                opt.set_moments(
                    shard.id(),
                    Moments { m: flat_piece(&m, r.clone())?, v: flat_piece(&v, r.clone())? },
                );
            }
            if let Some(master) = master {
                opt.set_master(shard.id(), flat_piece(&master, r)?);
            }
            shards.push(Some(shard));
        }
        let n = shards.len();
        let params = model.trainable_params();
        let index = params.iter().enumerate().map(|(i, (_, p))| (p.id(), i)).collect();
        let grads: Vec<(usize, DType)> = params.iter().map(|(_, p)| (p.elem_count(), p.dtype())).collect();
        let order: Vec<usize> = (0..n).rev().collect();
        let buckets = plan_buckets(&grads, &order, dist.rank(), dist.size(), dist.bucket_bytes);
        Ok(DataParallel {
            dist,
            shards,
            summed: vec![None; n],
            buckets,
            complete: vec![false; n],
            next_bucket: 0,
            in_flight: VecDeque::new(),
            rounds: 0,
            round: 0,
            index,
            present: vec![false; n],
            has_moments,
        })
    }

    fn comm(&self) -> &'static Comm {
        self.dist.comm
    }

    /// Sums host numbers (loss sums, DPO statistics) over the ranks.
    pub fn reduce_sums(&self, v: &mut [f64]) -> Result<()> {
        Ok(self.comm().all_reduce_f64(v)?)
    }

    /// Forward and backward of this rank's rows of a step (`rank_rows` of `picked`), the
    /// losses summed over the ranks, the gradients reduced during the backward.
    pub fn step(
        &mut self,
        objective: &Objective,
        model: &Llama,
        picked: &[usize],
        batch: usize,
        grads: &mut Grads,
    ) -> Result<StepLoss> {
        let comm = self.comm();
        let mine = rank_rows(picked.len(), comm.rank(), comm.size());
        // Rank 0 runs the most micro-batches; the others add rounds of zeros to match them.
        let rounds = rank_rows(picked.len(), 0, comm.size()).len().div_ceil(batch.max(1));
        (self.rounds, self.round) = (rounds, 0);
        let reduce = |v: &mut [f64]| Ok(comm.all_reduce_f64(v)?);
        let mut on = |e: GradEvent, g: &mut Grads| self.on_grads(model, e, g);
        let mut split = StepSplit { mine, reduce: &reduce, on_grads: &mut on, rounds };
        objective.step(model, picked, batch, grads, &mut split)
    }

    /// The reduction during the backward (the file header).
    fn on_grads(&mut self, model: &Llama, event: GradEvent, grads: &mut Grads) -> Result<()> {
        let reducing = self.dist.zero == 2 || self.round + 1 == self.rounds;
        match event {
            GradEvent::Ready(id) => match self.index.get(&id) {
                Some(&i) if reducing => self.complete[i] = true,
                _ => return Ok(()),
            },
            GradEvent::MicroBatchDone => self.complete.iter_mut().for_each(|c| *c = true),
        }
        if reducing {
            self.start_complete_buckets(model, grads)?;
        }
        if let GradEvent::MicroBatchDone = event {
            if reducing {
                self.comm().settle()?;
                while let Some((b, flight)) = self.in_flight.pop_front() {
                    self.unpack(model, b, flight)?;
                }
            }
            self.complete.iter_mut().for_each(|c| *c = false);
            self.next_bucket = 0;
            self.round += 1;
        }
        Ok(())
    }

    /// Starts every bucket, in order, whose gradients are all complete; unpacks the oldest
    /// started ones beyond `IN_FLIGHT`, which bounds the memory reductions hold.
    fn start_complete_buckets(&mut self, model: &Llama, grads: &mut Grads) -> Result<()> {
        /// Reductions queued on the comm stream at once: two keep it busy while the compute
        /// stream packs the next bucket.
        const IN_FLIGHT: usize = 2;
        let next_is_complete = |dp: &DataParallel| {
            dp.buckets.get(dp.next_bucket).is_some_and(|b| b.members.iter().all(|&i| dp.complete[i]))
        };
        // Most gradients complete a bucket only partly: nothing to start, nothing to look up.
        if !next_is_complete(self) {
            return Ok(());
        }
        let params = model.trainable_params();
        while next_is_complete(self) {
            let b = &self.buckets[self.next_bucket];
            let mine: Vec<Option<Tensor>> = b
                .members
                .iter()
                .map(|&i| {
                    let g = grads.remove(params[i].1.id());
                    self.present[i] |= g.is_some();
                    g
                })
                .collect();
            let packed = b.pack(&mine, params[b.members[0]].1.device())?;
            drop(mine);
            let flight = b.start(self.comm(), packed, self.dist.zero == 0)?;
            self.in_flight.push_back((self.next_bucket, flight));
            self.next_bucket += 1;
            if self.in_flight.len() > IN_FLIGHT {
                let (b, flight) = self.in_flight.pop_front().expect("more than IN_FLIGHT started");
                self.unpack(model, b, flight)?;
            }
        }
        Ok(())
    }

    /// Bucket `b`'s sums into `summed`: whole tensors (ZeRO-0), or shards added to the step's
    /// shards so far (ZeRO-1/2).
    fn unpack(&mut self, model: &Llama, b: usize, flight: InFlight) -> Result<()> {
        let (bucket, piece) = flight.finish()?;
        let params = model.trainable_params();
        let layout = &self.buckets[b];
        for (k, &i) in layout.members.iter().enumerate() {
            let p = params[i].1;
            self.summed[i] = Some(if self.dist.zero == 0 {
                layout.whole_of(&bucket, k, p.shape(), p.dtype())?
            } else {
                let shard = layout.shard_of(&piece, k, p.dtype())?;
                match self.summed[i].take() {
                    Some(acc) => ops::add(&acc, &shard)?,
                    None => shard,
                }
            });
        }
        Ok(())
    }

    /// The step's summed gradients as this rank needs them for its update: whole tensors
    /// (ZeRO-0) or its shards (ZeRO-1/2), in `trainable_params` order; None for a parameter
    /// no rank has a gradient for.
    pub fn reduce_gradients(&mut self, grads: &mut Grads) -> Result<Vec<Option<Tensor>>> {
        let mut any: Vec<f64> = self.present.iter().map(|&p| f64::from(u8::from(p))).collect();
        self.reduce_sums(&mut any)?;
        let mut out = Vec::with_capacity(any.len());
        for (i, anyone) in any.into_iter().enumerate() {
            let sum = self.summed[i].take();
            if anyone == 0.0 {
                out.push(None);
                continue;
            }
            out.push(Some(sum.ok_or_else(|| {
                TrainError::Msg(format!("gradient {i} was not reduced in the step's backward"))
            })?));
        }
        grads.clear();
        self.present.iter_mut().for_each(|x| *x = false);
        Ok(out)
    }

    /// The global L2 norm of the summed gradients: each rank adds the squares of its shard
    /// of every gradient (in parameter order), the ranks' sums add in rank order.
    pub fn grad_norm(&self, model: &Llama, reduced: &[Option<Tensor>]) -> Result<f64> {
        let mut mine = Grads::default();
        let mut ids = Vec::new();
        for ((_, p), g) in model.trainable_params().into_iter().zip(reduced) {
            let Some(g) = g else { continue };
            let piece = match self.dist.zero {
                0 => flat_piece(g, shard_range(p.elem_count(), self.dist.rank(), self.dist.size()))?,
                _ => g.clone(),
            };
            if piece.elem_count() > 0 {
                ids.push(piece.id());
                mine.insert(piece.id(), piece);
            }
        }
        let mut total = [grad_sum_squares(&mine, &ids)?];
        self.reduce_sums(&mut total)?;
        Ok(total[0].sqrt())
    }

    /// Clips (PyTorch's rule, as `clip_grad_norm`), updates, and brings every rank's weights up
    /// to date. Returns nothing; the caller logs the norm it computed.
    pub fn update(
        &mut self,
        model: &mut Llama,
        opt: &mut AdamW,
        reduced: Vec<Option<Tensor>>,
        norm: f64,
        clip: f64,
        lr: f64,
    ) -> Result<()> {
        let coef = if clip > 0.0 { clip / (norm + 1e-6) } else { 1.0 };
        opt.begin_step();
        for (i, ((name, p), g)) in model.trainable_params_mut().into_iter().zip(reduced).enumerate() {
            let Some(g) = g else { continue };
            self.has_moments[i] = true;
            let g = if coef < 1.0 && g.elem_count() > 0 { ops::scale(&g, coef)? } else { g };
            let decay = !is_norm(name);
            if self.dist.zero == 0 {
                opt.update(p, &g, decay, lr)?;
                continue;
            }
            let dims = p.dims().to_vec();
            if let Some(shard) = self.shards[i].as_mut() {
                opt.update(shard, &g, decay, lr)?;
            }
            let empty;
            let shard = match &self.shards[i] {
                Some(s) => s,
                None => {
                    empty = Tensor::zeros_on([0], p.dtype(), p.device())?;
                    &empty
                }
            };
            self.comm().all_gather_into(shard, p)?;
            debug_assert_eq!(p.dims(), &dims[..]);
        }
        Ok(())
    }

    /// An optimizer holding whole moments keyed by the model's parameters, for the checkpoint
    /// rank 0 writes (every rank must call it: the moments are gathered). ZeRO-0: None, the
    /// run's own optimizer already holds them whole.
    pub fn gathered_optimizer(&self, model: &Llama, opt: &AdamW) -> Result<Option<AdamW>> {
        if self.dist.zero == 0 {
            return Ok(None);
        }
        let mut whole = AdamW::new(opt.config);
        whole.set_step_count(opt.step_count());
        // `has_moments` is the same on every rank (updates are decided from global sums), and
        // a rank holds the moments of each of its non-empty shards of such a parameter.
        for (i, (_, p)) in model.trainable_params().into_iter().enumerate() {
            if !self.has_moments[i] {
                continue;
            }
            let dtype = if p.is_cuda() { DType::F32 } else { p.dtype() };
            let (mut m, mut v) = (
                Tensor::zeros_on(p.shape().clone(), dtype, p.device())?,
                Tensor::zeros_on(p.shape().clone(), dtype, p.device())?,
            );
            let empty = Tensor::zeros_on([0], dtype, p.device())?;
            let (ms, vs) = match self.shards[i].as_ref().and_then(|s| opt.moments(s.id())) {
                Some(Moments { m, v }) => (m, v),
                None => (&empty, &empty),
            };
            self.comm().all_gather_into(ms, &mut m)?;
            self.comm().all_gather_into(vs, &mut v)?;
            whole.set_moments(p.id(), Moments { m, v });
        }
        Ok(Some(whole))
    }
}
