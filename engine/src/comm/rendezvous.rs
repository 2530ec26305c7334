//! How the ranks of a job agree on NCCL's unique id (128 opaque bytes rank 0 makes, which every
//! rank passes to ncclCommInitRank). Where the launcher started an MPI world (mpirun, srun) and
//! this build has MPI, rank 0 broadcasts it over MPI. Otherwise (torchrun) rank 0 hands it out
//! over TCP next to torchrun's own rendezvous: torchrun's agent on rank 0's node already runs
//! its c10d TCPStore on MASTER_ADDR:MASTER_PORT, so Solar listens on MASTER_PORT + 1.
//!
//! The exchange over TCP: each rank r > 0 connects (retrying until rank 0 listens) and says
//! `MAGIC, VERSION, r, size`; rank 0 answers `MAGIC, VERSION, size, status, id`. A rank that
//! disagrees on the world size, a rank number twice or out of range, or another Solar version
//! ends both sides with an error saying so; a connection that is not Solar's (a port scan) is
//! dropped and the wait goes on. Everything waits at most SOLAR_DIST_TIMEOUT.

use super::Place;
use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub(crate) type UniqueId = [u8; 128];

const MAGIC: &[u8; 8] = b"SOLARNID";
const VERSION: u32 = 1;
const HELLO: usize = 8 + 4 + 4 + 4;
const REPLY: usize = 8 + 4 + 4 + 4 + 128;
const OK: u32 = 0;
const REFUSED: u32 = 1;

fn err(msg: String) -> Error {
    Error::invalid("rendezvous", msg)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Rank 0's unique id on every rank of `place`; rank 0 makes it with `make`. With MPI, the MPI
/// world it opened comes back too: it stays up for the job (abort, finalize).
pub(crate) fn exchange(place: &Place, make: impl FnOnce() -> Result<UniqueId>) -> Result<Exchanged> {
    if place.size == 1 {
        return Ok(Exchanged {
            id: make()?,
            #[cfg(feature = "mpi")]
            mpi: None,
        });
    }
    #[cfg(feature = "mpi")]
    if place.launcher.starts_mpi() {
        let m = super::mpi::MpiComm::init(place)?;
        // Rank 0 sends nothing when it cannot make the id, so the others stop too.
        let (mut bytes, mut failed) = (Vec::new(), None);
        if place.rank == 0 {
            match make() {
                Ok(id) => bytes = id.to_vec(),
                Err(e) => failed = Some(e),
            }
        }
        m.broadcast_bytes(&mut bytes, 0)?;
        if let Some(e) = failed {
            return Err(e);
        }
        let id = bytes.try_into().map_err(|b: Vec<u8>| {
            err(format!(
                "rank 0 sent {} bytes instead of NCCL's 128-byte unique id (it failed to make one)",
                b.len()
            ))
        })?;
        return Ok(Exchanged { id, mpi: Some(m) });
    }
    let Some((addr, master_port)) = &place.master else {
        return Err(err(format!(
            "launched by {} as rank {} of {} with neither an MPI world{} nor MASTER_ADDR and MASTER_PORT: nothing to hand out NCCL's unique id; set MASTER_ADDR to rank 0's host and MASTER_PORT to a free port (Solar listens on MASTER_PORT + 1)",
            place.launcher.name(),
            place.rank,
            place.size,
            if cfg!(feature = "mpi") { "" } else { " (this build has no MPI)" },
        )));
    };
    let timeout = super::timeout_from_env().map_err(err)?;
    let port = port_after(*master_port)?;
    let id = if place.rank == 0 {
        let server = Server::bind(port)?;
        let id = make()?;
        server.serve(&id, place.size, timeout)?;
        id
    } else {
        fetch(addr, port, place.rank, place.size, timeout)?
    };
    Ok(Exchanged {
        id,
        #[cfg(feature = "mpi")]
        mpi: None,
    })
}

pub(crate) struct Exchanged {
    pub id: UniqueId,
    #[cfg(feature = "mpi")]
    pub mpi: Option<super::mpi::MpiComm>,
}

/// Solar's port beside torchrun's store on MASTER_PORT.
pub(crate) fn port_after(master_port: u16) -> Result<u16> {
    master_port.checked_add(1).ok_or_else(|| {
        err("MASTER_PORT=65535 leaves no port for Solar's rendezvous (it listens on MASTER_PORT + 1)".into())
    })
}

/// Rank 0's end: listening on every interface.
pub(crate) struct Server {
    listener: TcpListener,
    port: u16,
}

impl Server {
    pub fn bind(port: u16) -> Result<Server> {
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
            err(format!("rank 0 cannot listen on port {port} (MASTER_PORT + 1) for NCCL's unique id: {e}; pick another MASTER_PORT"))
        })?;
        let port = listener.local_addr().map_err(|e| err(e.to_string()))?.port();
        Ok(Server { listener, port })
    }

    #[cfg(test)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Hands `id` to ranks 1..size, returning once each has it.
    pub fn serve(self, id: &UniqueId, size: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut served = BTreeSet::new();
        self.listener.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
        while served.len() + 1 < size {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if let Some(rank) = answer(stream, peer, id, size, &served, deadline)? {
                        served.insert(rank);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        let missing: Vec<String> =
                            (1..size).filter(|r| !served.contains(r)).map(|r| r.to_string()).collect();
                        return Err(err(format!(
                            "rank 0 waited {:.0} s on port {} for ranks {} to ask for NCCL's unique id (SOLAR_DIST_TIMEOUT): did they start, and can they reach this host?",
                            timeout.as_secs_f64(),
                            self.port,
                            missing.join(", ")
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(err(format!("rank 0 accepting on port {}: {e}", self.port))),
            }
        }
        Ok(())
    }
}

/// One connection to rank 0: the rank it served, None for a stranger (dropped), or the
/// error that ends the job.
fn answer(
    mut s: TcpStream,
    peer: SocketAddr,
    id: &UniqueId,
    size: usize,
    served: &BTreeSet<usize>,
    deadline: Instant,
) -> Result<Option<usize>> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut hello = [0u8; HELLO];
    let read = s
        .set_nonblocking(false)
        .and_then(|_| s.set_read_timeout(Some(wait)))
        .and_then(|_| s.read_exact(&mut hello));
    if read.is_err() || &hello[..8] != MAGIC {
        return Ok(None);
    }
    let (version, rank, their_size) =
        (u32_at(&hello, 8), u32_at(&hello, 12) as usize, u32_at(&hello, 16) as usize);
    let problem = if version != VERSION {
        Some(format!("{peer} speaks rendezvous version {version}, rank 0 version {VERSION}: are all ranks the same Solar build?"))
    } else if their_size != size {
        Some(format!("rank {rank} at {peer} is in a world of {their_size}, rank 0 in a world of {size}"))
    } else if rank == 0 || rank >= size || served.contains(&rank) {
        Some(format!(
            "{peer} says it is rank {rank} of {size}: {}",
            if rank == 0 || rank >= size { "no such rank" } else { "that rank already has the id" }
        ))
    } else {
        None
    };
    let mut reply = Vec::with_capacity(REPLY);
    reply.extend_from_slice(MAGIC);
    reply.extend_from_slice(&VERSION.to_le_bytes());
    reply.extend_from_slice(&(size as u32).to_le_bytes());
    reply.extend_from_slice(&(if problem.is_some() { REFUSED } else { OK }).to_le_bytes());
    reply.extend_from_slice(if problem.is_some() { &[0u8; 128] } else { id });
    let sent = s.write_all(&reply);
    match problem {
        Some(p) => Err(err(format!("rank 0 refused {p}"))),
        None => sent
            .map(|_| Some(rank))
            .map_err(|e| err(format!("rank 0 sending NCCL's unique id to rank {rank} at {peer}: {e}"))),
    }
}

/// A rank's end: connects to rank 0 at `host:port` (retrying until it listens) and returns the id.
pub(crate) fn fetch(host: &str, port: u16, rank: usize, size: usize, timeout: Duration) -> Result<UniqueId> {
    let deadline = Instant::now() + timeout;
    let mut last: String;
    let mut s = loop {
        match connect(host, port) {
            Ok(s) => break s,
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(err(format!(
                "rank {rank} of {size}: no rank 0 answered at {host}:{port} (MASTER_ADDR:MASTER_PORT + 1) for {:.0} s (SOLAR_DIST_TIMEOUT); last: {last}",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut hello = Vec::with_capacity(HELLO);
    hello.extend_from_slice(MAGIC);
    for v in [VERSION, rank as u32, size as u32] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    let mut reply = [0u8; REPLY];
    let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    s.set_read_timeout(Some(wait))
        .and_then(|_| s.write_all(&hello))
        .and_then(|_| s.read_exact(&mut reply))
        .map_err(|e| err(format!("rank {rank}: no answer from {host}:{port} after connecting: {e}")))?;
    if &reply[..8] != MAGIC {
        return Err(err(format!(
            "rank {rank}: {host}:{port} is not Solar's rendezvous (another service on MASTER_PORT + 1?)"
        )));
    }
    let (their_size, status) = (u32_at(&reply, 12) as usize, u32_at(&reply, 16));
    if u32_at(&reply, 8) != VERSION || their_size != size || status != OK {
        return Err(err(format!(
            "rank 0 at {host}:{port} refused rank {rank} of {size} (rank 0 has a world of {their_size}, rendezvous version {}; this rank {VERSION})",
            u32_at(&reply, 8)
        )));
    }
    Ok(reply[20..].try_into().expect("128 bytes"))
}

fn connect(host: &str, port: u16) -> std::result::Result<TcpStream, String> {
    let addrs = (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests;
