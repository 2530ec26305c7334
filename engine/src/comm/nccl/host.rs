//! The NCCL backend's collectives of host values (loss sums, decisions, the barrier), through
//! small device buffers on the compute stream, each waited for. Host numbers are gathered, not
//! reduced, and summed on the host in rank order, so every rank gets the same bits whatever
//! order NCCL would add in.

use super::{check, NcclComm, BYTES, F32, SUM};
use crate::error::Result;
use std::ffi::c_void;

impl NcclComm {
    pub fn all_reduce_f64(&self, v: &mut [f64]) -> Result<()> {
        let n = v.len();
        if n == 0 {
            return Ok(());
        }
        let send = self.gpu.upload(&v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>())?;
        let recv = self.gpu.alloc::<u64>(n * self.size)?;
        {
            let comm = self.lock()?;
            // SAFETY: send holds n u64, recv n * size; both live until the wait.
            let r = unsafe {
                (self.lib.all_gather)(
                    send.addr() as *const c_void,
                    recv.addr() as *mut c_void,
                    n * 8,
                    BYTES,
                    comm.0,
                    self.stream()?,
                )
            };
            check(self.lib, "ncclAllGather", r)?;
            self.wait(&comm, "ncclAllGather")?;
        }
        let all = self.gpu.download(&recv)?;
        for (i, x) in v.iter_mut().enumerate() {
            *x = (0..self.size).map(|r| f64::from_bits(all[r * n + i])).fold(-0.0, |a, b| a + b);
        }
        Ok(())
    }

    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let len = self.gpu.upload(&[bytes.len() as u64])?;
        self.broadcast_raw(len.addr(), 8, root)?;
        let n = self.gpu.download(&len)?[0] as usize;
        bytes.resize(n, 0);
        if n > 0 {
            let buf = self.gpu.upload(&bytes[..])?;
            self.broadcast_raw(buf.addr(), n, root)?;
            *bytes = self.gpu.download(&buf)?;
        }
        Ok(())
    }

    /// A one-element all-reduce every rank must join, waited for.
    pub fn barrier(&self) -> Result<()> {
        let one = self.gpu.zeros::<f32>(1)?;
        let comm = self.lock()?;
        // SAFETY: one f32, in place.
        let r = unsafe {
            (self.lib.all_reduce)(
                one.addr() as *const c_void,
                one.addr() as *mut c_void,
                1,
                F32,
                SUM,
                comm.0,
                self.stream()?,
            )
        };
        check(self.lib, "ncclAllReduce", r)?;
        self.wait(&comm, "barrier (ncclAllReduce)")
    }
}
