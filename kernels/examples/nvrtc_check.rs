//! Compiles one kernel source (or all) with NVRTC and prints each kernel's ptxas report, and
//! with --sass the SASS instruction mix (tensor-core, 16-byte loads), so a kernel engineer can
//! iterate on one .cu file without a GPU:
//!   cargo run -p solar-kernels --example nvrtc_check -- rmsnorm sm_90 [--sass] [--dump FILE]
//! The source and the headers are read from kernels/cu at run time, so edits need no rebuild.

use solar_kernels::{nvrtc::Header, parse_ptxas_log, sources::HEADERS, Toolkit, SOURCES};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("all");
    let arch = args.get(1).map(String::as_str).unwrap_or("sm_90");
    let sass = args.iter().any(|a| a == "--sass");
    let dump = args.iter().position(|a| a == "--dump").and_then(|i| args.get(i + 1));
    let tk = Toolkit::get().unwrap_or_else(|e| fail(&e.to_string()));
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/cu");
    let texts: Vec<(&str, String)> = HEADERS
        .iter()
        .map(|h| {
            let text = std::fs::read_to_string(format!("{dir}/{}", h.name))
                .unwrap_or_else(|e| fail(&format!("{}: {e}", h.name)));
            (h.name, text)
        })
        .collect();
    let headers: Vec<Header> = texts.iter().map(|(name, code)| Header { name, code }).collect();
    let names: Vec<&str> = if name == "all" { SOURCES.iter().map(|s| s.name).collect() } else { vec![name] };
    for n in names {
        let Some(src) = SOURCES.iter().find(|s| s.name == n) else { fail(&format!("no source {n}")) };
        // An arch-specific source compiles for its own target (matmul_sm90 on sm_90: sm_90a).
        let Some(target) = src.target_for(arch) else {
            println!("{arch} {n:<14} (built for {} only)", src.only.unwrap_or_default());
            continue;
        };
        let code = std::fs::read_to_string(format!("{dir}/{n}.cu"))
            .unwrap_or_else(|e| fail(&format!("{n}.cu: {e}")));
        let opts = solar_kernels::compile_options(target, &tk.include);
        let out = tk.nvrtc.compile(n, &code, &headers, &opts).unwrap_or_else(|e| fail(&e.to_string()));
        // ptxas warnings (wgmma serialization, say) are worth seeing before any number.
        for line in out.log.lines().filter(|l| l.contains("warning") || l.contains("Performance")) {
            println!("{arch} {n:<14} {line}");
        }
        for k in parse_ptxas_log(&out.log) {
            println!(
                "{arch} {n:<14} {:<44} regs {:>3} smem {:>6} stack {:>4} spills {}/{}",
                k.name, k.registers, k.shared_bytes, k.stack_bytes, k.spill_stores, k.spill_loads
            );
        }
        let path = std::env::temp_dir().join(format!("nvrtc_check-{n}-{arch}.cubin"));
        std::fs::write(&path, &out.cubin).unwrap();
        if sass {
            let Some(nvdisasm) = &tk.nvdisasm else { fail("no nvdisasm found") };
            let o = std::process::Command::new(nvdisasm).arg(&path).output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout);
            for op in ["HMMA", "HGMMA", "LDSM", "LDG.E.128", "STG.E.128", "LDGSTS", "BAR.SYNC", "SHFL"] {
                println!("  {op:<10} {}", text.matches(op).count());
            }
            if let Some(d) = dump {
                std::fs::write(d, text.as_bytes()).unwrap();
                println!("  SASS written to {d}");
            }
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
