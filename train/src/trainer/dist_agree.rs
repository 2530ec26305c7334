//! What the ranks of a data parallel job agree on outside the gradients: when to stop (a
//! signal any rank received), where to resume from (every rank must see rank 0's checkpoint),
//! and whether a step has a row for every rank. Each is a small collective or a check all
//! ranks make alike, so they decide together instead of one rank waiting forever.

use super::data_parallel::Dist;
use crate::error::{Result, TrainError};
use solar_model::output::interrupt;
use std::path::Path;

/// A stop signal this process, or with data parallel ranks any rank, received: all ranks stop
/// after the same step, SIGINT winning over SIGTERM, and record it (`comm::agree_stop`) so
/// they end cleanly together with its exit code.
pub fn stop_signal(dist: Option<&Dist>) -> Result<Option<&'static str>> {
    let mine = interrupt::received();
    let Some(d) = dist else { return Ok(mine.map(interrupt::signal_name)) };
    let mut seen = [f64::from(u8::from(mine == Some(2))), f64::from(u8::from(mine.is_some_and(|s| s != 2)))];
    d.comm.all_reduce_f64(&mut seen)?;
    let sig = match seen {
        [int, _] if int > 0.0 => 2,
        [_, other] if other > 0.0 => mine.filter(|&s| s != 2).unwrap_or(15),
        _ => return Ok(None),
    };
    solar_engine::comm::agree_stop(i32::from(interrupt::exit_code(sig)));
    Ok(Some(interrupt::signal_name(sig)))
}

/// Every rank must resume from the same checkpoint: one that only rank 0 can see (OUT on a
/// disk of rank 0's machine alone) is an error, not a silent divergence.
pub fn agree_on_resume(d: &Dist, resumed_from: Option<usize>, work: &Path) -> Result<()> {
    let mine = resumed_from.map_or(-1.0, |s| s as f64);
    let mut leader = mine.to_le_bytes().to_vec();
    d.comm.broadcast_bytes(&mut leader, 0)?;
    let theirs = f64::from_le_bytes(leader.as_slice().try_into().unwrap_or([0; 8]));
    if theirs != mine {
        let say = |s: f64| if s < 0.0 { "no checkpoint".to_string() } else { format!("step {s}") };
        return Err(TrainError::file(
            work,
            format!(
                "rank {} found {} but rank 0 resumes from {}: OUT must be on a filesystem every rank sees",
                d.rank(),
                say(mine),
                say(theirs)
            ),
        ));
    }
    Ok(())
}

/// Refuses a step too small to give every rank a row.
pub fn check_rows_per_step(rows_per_step: usize, dist: &Dist) -> Result<()> {
    if rows_per_step < dist.size() {
        return Err(TrainError::Msg(format!(
            "a step of {rows_per_step} rows (--batch x --grad-accum) cannot give each of {} ranks a row; raise --batch or --grad-accum",
            dist.size()
        )));
    }
    Ok(())
}
