//! Where this process stands in a job, read from its launcher's environment: torchrun (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), Open MPI's mpirun
//! (`OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK`) or a Slurm step started by srun (`SLURM_PROCID`,
//! `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`). None set: one process, no collectives.
//!
//! A Slurm batch script itself also carries `SLURM_PROCID=0` and `SLURM_NTASKS`, without being
//! one of the job's tasks: only a step (srun sets `SLURM_STEP_ID`) counts, so a `solar-train`
//! started directly in an sbatch script runs as one process, as it would anywhere else.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    Torchrun,
    OpenMpi,
    Slurm,
}

impl Launcher {
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Torchrun => "torchrun",
            Launcher::OpenMpi => "mpirun (Open MPI)",
            Launcher::Slurm => "srun (Slurm)",
        }
    }
    /// Whether the launcher also started an MPI world (so MPI can carry the collectives, or at
    /// least NCCL's unique id): mpirun always, srun when the MPI library speaks PMI.
    pub fn starts_mpi(self) -> bool {
        matches!(self, Launcher::OpenMpi | Launcher::Slurm)
    }
}

/// This process's place in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub launcher: Launcher,
    pub rank: usize,
    pub size: usize,
    /// Rank among the processes on this machine: which GPU is this process's.
    pub local_rank: usize,
    /// Processes on this machine, where the launcher says (`LOCAL_WORLD_SIZE`,
    /// `OMPI_COMM_WORLD_LOCAL_SIZE`, `SLURM_STEP_TASKS_PER_NODE` when one number): CPU ranks
    /// share its cores out.
    pub local_size: Option<usize>,
    /// torchrun's rendezvous address, where NCCL's unique id is handed out when there is no
    /// MPI world to broadcast it (`MASTER_ADDR`, `MASTER_PORT`).
    pub master: Option<(String, u16)>,
}

/// The launcher's place for this process, from the real environment.
pub fn detect() -> Result<Option<Place>, String> {
    detect_in(&std::env::vars().collect())
}

fn number(env: &HashMap<String, String>, key: &str) -> Result<Option<usize>, String> {
    match env.get(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| format!("environment variable {key}={v:?} is not a non-negative integer")),
    }
}

fn required(env: &HashMap<String, String>, key: &str, launcher: Launcher) -> Result<usize, String> {
    number(env, key)?.ok_or_else(|| format!("{} sets a rank but not {key}", launcher.name()))
}

/// `detect` over a given environment (tests pass their own).
pub fn detect_in(env: &HashMap<String, String>) -> Result<Option<Place>, String> {
    let (launcher, rank, size, local, local_size) = if let Some(rank) = number(env, "RANK")? {
        let l = Launcher::Torchrun;
        let local = number(env, "LOCAL_RANK")?.unwrap_or(0);
        (l, rank, required(env, "WORLD_SIZE", l)?, local, number(env, "LOCAL_WORLD_SIZE")?)
    } else if let Some(rank) = number(env, "OMPI_COMM_WORLD_RANK")? {
        let l = Launcher::OpenMpi;
        let local = number(env, "OMPI_COMM_WORLD_LOCAL_RANK")?.unwrap_or(0);
        let local_size = number(env, "OMPI_COMM_WORLD_LOCAL_SIZE")?;
        (l, rank, required(env, "OMPI_COMM_WORLD_SIZE", l)?, local, local_size)
    } else if env.contains_key("SLURM_STEP_ID") && env.contains_key("SLURM_PROCID") {
        let l = Launcher::Slurm;
        let size = match number(env, "SLURM_STEP_NUM_TASKS")? {
            Some(n) => n,
            None => required(env, "SLURM_NTASKS", l)?,
        };
        // "4" on a uniform step; "4(x2),3" otherwise, where this node's share is not one number.
        let per_node = env.get("SLURM_STEP_TASKS_PER_NODE").and_then(|v| v.parse::<usize>().ok());
        (l, required(env, "SLURM_PROCID", l)?, size, number(env, "SLURM_LOCALID")?.unwrap_or(0), per_node)
    } else {
        return Ok(None);
    };
    if size == 0 || rank >= size {
        return Err(format!("{} gives rank {rank} of a world of {size}", launcher.name()));
    }
    let master = match (env.get("MASTER_ADDR"), number(env, "MASTER_PORT")?) {
        (Some(addr), Some(port)) if !addr.is_empty() => {
            let port = u16::try_from(port).map_err(|_| format!("MASTER_PORT={port} is not a port number"))?;
            Some((addr.clone(), port))
        }
        _ => None,
    };
    Ok(Some(Place { launcher, rank, size, local_rank: local, local_size, master }))
}

/// A note for a batch script that asked Slurm for several tasks but started Solar directly:
/// it runs as one process, which is rarely what was meant.
pub fn slurm_batch_note() -> Option<String> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let tasks = number(&env, "SLURM_NTASKS").ok().flatten()?;
    (tasks > 1 && !env.contains_key("SLURM_STEP_ID")).then(|| {
        format!(
            "note: SLURM_NTASKS={tasks} but this is the batch script, not a task: running as one process; start it with srun to train on {tasks} ranks"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn no_launcher_is_one_process() {
        assert_eq!(detect_in(&env(&[("HOME", "/root")])).unwrap(), None);
        // An sbatch script: Slurm variables, but no step.
        assert_eq!(detect_in(&env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8")])).unwrap(), None);
    }

    #[test]
    fn each_launcher_gives_its_rank_size_and_local_rank() {
        let t = detect_in(&env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            t,
            Place {
                launcher: Launcher::Torchrun,
                rank: 3,
                size: 8,
                local_rank: 1,
                local_size: None,
                master: Some(("node0".into(), 29500))
            }
        );
        let m = detect_in(&env(&[
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "3"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((m.launcher, m.rank, m.size, m.local_rank, m.master), (Launcher::OpenMpi, 2, 3, 2, None));
        let s = detect_in(&env(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_LOCALID", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((s.launcher, s.rank, s.size, s.local_rank), (Launcher::Slurm, 5, 8, 1));
    }

    #[test]
    fn inconsistent_variables_are_errors_naming_them() {
        let e = detect_in(&env(&[("RANK", "0")])).unwrap_err();
        assert!(e.contains("WORLD_SIZE"), "{e}");
        let e = detect_in(&env(&[("RANK", "x"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.contains("RANK=\"x\""), "{e}");
        let e = detect_in(&env(&[("RANK", "2"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.contains("rank 2 of a world of 2"), "{e}");
        let e = detect_in(&env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ]))
        .unwrap_err();
        assert!(e.contains("MASTER_PORT"), "{e}");
    }
}
