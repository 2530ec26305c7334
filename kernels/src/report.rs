//! Reading ptxas -v output from an NVRTC log: per kernel, registers, shared memory, stack and
//! spills. `solar-train bench --kernels` prints it; the compile tests assert no spills in the
//! hot kernels.
//!
//! The lines look like:
//!   ptxas info    : Compiling entry function 'rmsnorm_fwd_bf16' for 'sm_90'
//!   ptxas info    : Function properties for rmsnorm_fwd_bf16
//!       0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//!   ptxas info    : Used 24 registers, used 0 barriers, 1024 bytes smem, 400 bytes cmem[0]

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelReport {
    pub name: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// The number just before `unit` in `line` ("24 registers" -> 24).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let at = line.find(unit)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

/// Every kernel entry reported in `log`, in order of appearance.
pub fn parse_ptxas_log(log: &str) -> Vec<KernelReport> {
    let mut out: Vec<KernelReport> = Vec::new();
    let mut current: Option<usize> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelReport { name, ..Default::default() });
            current = Some(out.len() - 1);
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            let name = rest.trim();
            current = out.iter().position(|k| k.name == name);
        } else if let Some(i) = current {
            let k = &mut out[i];
            if line.contains("stack frame") {
                k.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                k.registers = number_before(line, "registers").unwrap_or(0);
                k.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registers_smem_and_spills() {
        let log = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'k_a' for 'sm_90'\n\
            ptxas info    : Function properties for k_a\n\
            \x20   16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
            ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 400 bytes cmem[0]\n\
            ptxas info    : Compiling entry function 'k_b' for 'sm_90'\n\
            ptxas info    : Function properties for k_b\n\
            \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 12 registers, used 0 barriers, 380 bytes cmem[0]\n";
        let r = parse_ptxas_log(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelReport {
                name: "k_a".into(),
                registers: 40,
                shared_bytes: 2048,
                stack_bytes: 16,
                spill_stores: 8,
                spill_loads: 4
            }
        );
        assert_eq!((r[1].registers, r[1].shared_bytes, r[1].spill_stores), (12, 0, 0));
    }
}
