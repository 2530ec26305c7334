//! Starting as one rank of a distributed job. No flag is needed: torchrun, mpirun and srun say
//! through the environment which rank this process is (solar_engine::comm::launch), and then
//! pretrain, sft and dpo train data parallel, each rank on its machine's GPU number LOCAL_RANK
//! (or the CPU, over MPI). Rank 0 writes and talks; the others are silent unless they fail, and
//! any rank's failure ends the whole job (MPI_Abort), since the others would wait for it.

use crate::common::{CliError, Common, DeviceChoice};
use solar_engine::comm::{self, Place};
use solar_engine::cuda::Gpu;
use solar_engine::Device;
use solar_model::output::interrupt;
use solar_train::trainer::data_parallel::Dist;

/// This process's place in a job, if a launcher started it as one of its ranks.
pub fn place() -> Result<Option<Place>, CliError> {
    if let Some(note) = comm::launch::slurm_batch_note() {
        eprintln!("{note}");
    }
    comm::launch::detect().map_err(CliError)
}

/// The device of this rank: its local rank's GPU where `--device` is auto or `cuda` (a node's
/// GPUs are shared out by local rank; under Slurm with one visible GPU per task, that one).
pub fn select_device(common: &Common, place: &Place) -> Result<Device, CliError> {
    let local = place.local_rank;
    let gpu = || match Gpu::get(local) {
        Ok(_) => Ok(Device::Cuda(local)),
        Err(_) if local > 0 && one_visible_gpu() && Gpu::get(0).is_ok() => Ok(Device::Cuda(0)),
        Err(e) => Err(e),
    };
    match common.device {
        DeviceChoice::Auto => Ok(gpu().unwrap_or(Device::Cpu)),
        DeviceChoice::Fixed(Device::Cuda(0)) => Ok(gpu()?),
        _ => common.select_device(),
    }
}

/// CPU ranks on one machine share its cores: each gets its share, unless --threads says.
pub fn cpu_threads(place: &Place, device: Device) -> Option<usize> {
    let ranks_here = place.local_size?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (device == Device::Cpu && ranks_here > 1).then(|| (cores / ranks_here).max(1))
}

fn one_visible_gpu() -> bool {
    std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| !v.is_empty() && !v.contains(','))
}

/// Joins the job's collectives; ranks other than 0 go quiet from here on.
pub fn join(place: &Place, device: Device) -> Result<(), CliError> {
    comm::init_world(place, device)?;
    comm::set_stop_check(|| interrupt::received().map(interrupt::signal_name));
    if place.rank > 0 {
        std::panic::set_hook(Box::new(|info| comm::say_error(&format!("rank panicked: {info}"))));
        comm::silence_this_rank()
            .map_err(|e| CliError(format!("cannot silence rank {}: {e}", place.rank)))?;
    } else {
        eprintln!(
            "distributed: {} ranks launched by {}, collectives over {}, this is rank 0 on {device}",
            place.size,
            place.launcher.name(),
            comm::world().map_or("?", |w| w.backend())
        );
    }
    Ok(())
}

/// The run's data parallel settings: ZeRO-1 by default when there are several ranks.
pub fn dist(zero: Option<u8>, bucket_mb: f64) -> Option<Dist> {
    let comm = comm::world()?;
    Some(Dist {
        comm,
        zero: zero.unwrap_or(if comm.size() > 1 { 1 } else { 0 }),
        bucket_bytes: ((bucket_mb * 1024.0 * 1024.0) as usize).max(1),
    })
}

/// Reports a failure and ends: the whole job where this is one rank of several.
pub fn fail(message: &str, code: u8) -> std::process::ExitCode {
    match comm::world() {
        // Every rank stopped after the same step on a signal: nobody waits, so no abort.
        Some(w) if comm::agreed_stop().is_some() => {
            let code = comm::agreed_stop().unwrap_or(i32::from(code));
            if w.rank() == 0 {
                eprintln!("error: {message}");
            }
            comm::finish();
            std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Some(w) => {
            comm::say_error(&format!("error: rank {} of {}: {message}", w.rank(), w.size()));
            comm::abort(i32::from(code))
        }
        None => {
            eprintln!("error: {message}");
            std::process::ExitCode::from(code)
        }
    }
}
