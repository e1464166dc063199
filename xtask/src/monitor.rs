//! QEMU's human monitor on a Unix socket, asked what each vCPU is doing when a boot goes
//! silent: a fuzz "hang" is only actionable with the place the guest was stuck (a kernel
//! loop, a user-mode spin with the timer dead, every CPU halted waiting for a lost wake-up).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A monitor socket for one QEMU run. The path lives in /tmp: a Unix socket path is limited
/// to 107 bytes, which a deep target directory can exceed.
pub struct Monitor {
    path: PathBuf,
}

/// One vCPU's state from `info registers -a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuState {
    pub cpu: u32,
    pub rip: u64,
    /// Current privilege level: 0 kernel, 3 user.
    pub cpl: u8,
    /// Halted (`HLT=1`): idle, waiting for an interrupt.
    pub halted: bool,
}

impl Monitor {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("cowlab-mon-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Self { path }
    }

    /// QEMU's `-monitor` argument: a listening socket QEMU does not wait on.
    pub fn arg(&self) -> String {
        format!("unix:{},server=on,wait=off", self.path.display())
    }

    /// The monitor's answer to `command`: everything it prints within `wait` (the human
    /// monitor has no end-of-answer marker, so the reading stops at the first quiet gap).
    pub fn query(&self, command: &str, wait: Duration) -> Result<String> {
        let mut stream = UnixStream::connect(&self.path)
            .with_context(|| format!("connecting to {}", self.path.display()))?;
        stream.set_read_timeout(Some(Duration::from_millis(300)))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let deadline = Instant::now() + wait;
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        let mut quiet_since: Option<Instant> = None;
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    text.extend_from_slice(&buf[..n]);
                    quiet_since = None;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // The answer has begun and stopped: done.
                    let quiet = *quiet_since.get_or_insert_with(Instant::now);
                    if text.windows(3).any(|w| w == b"IP=")
                        && quiet.elapsed() >= Duration::from_millis(300)
                    {
                        break;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(String::from_utf8_lossy(&text).replace('\r', ""))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The vCPUs in an `info registers -a` answer: each `CPU#n` header, then its `RIP=` line
/// (`EIP=` before long mode), which carries `CPL=` and `HLT=`.
pub fn parse_registers(text: &str) -> Vec<CpuState> {
    let mut cpus = Vec::new();
    let mut cpu = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("CPU#") {
            cpu = n.trim().parse().unwrap_or(cpu);
            continue;
        }
        // EIP in 16- and 32-bit modes (the boot loader's stages), RIP in long mode.
        let Some(rest) = line
            .strip_prefix("RIP=")
            .or_else(|| line.strip_prefix("EIP="))
        else {
            continue;
        };
        let hex_end = rest
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        let Ok(rip) = u64::from_str_radix(&rest[..hex_end], 16) else {
            continue;
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse::<u8>().ok())
        };
        cpus.push(CpuState {
            cpu,
            rip,
            cpl: field("CPL=").unwrap_or(0),
            halted: field("HLT=") == Some(1),
        });
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of QEMU 7.2's `info registers -a` (abridged to the lines the parser reads
    // and one it must skip).
    const SAMPLE: &str = "\
info registers -a\r
\r
CPU#0\r
RAX=0000000000000000 RBX=ffff800000123000 RCX=0000000000000001 RDX=0000000000000000\r
RIP=ffffffff80012345 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r
ES =0000 0000000000000000 00000000 00000000\r
\r
CPU#1\r
RIP=0000000000401a2b RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0\r
";

    #[test]
    fn each_cpu_gets_its_rip_privilege_and_halt_state() {
        let cpus = parse_registers(&SAMPLE.replace('\r', ""));
        assert_eq!(
            cpus,
            vec![
                CpuState {
                    cpu: 0,
                    rip: 0xffff_ffff_8001_2345,
                    cpl: 0,
                    halted: true
                },
                CpuState {
                    cpu: 1,
                    rip: 0x40_1a2b,
                    cpl: 3,
                    halted: false
                },
            ]
        );
    }

    #[test]
    fn a_cpu_still_in_the_boot_loaders_real_mode_reports_eip() {
        let text = "CPU#0\nEAX=02283000 EBX=00000000\nEIP=0000ad1c EFL=00000202 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n";
        assert_eq!(
            parse_registers(text),
            vec![CpuState {
                cpu: 0,
                rip: 0xad1c,
                cpl: 0,
                halted: false
            }]
        );
    }

    #[test]
    fn an_answer_without_registers_gives_no_cpu() {
        assert!(parse_registers("QEMU 7.2.0 monitor - type 'help'\n(qemu) ").is_empty());
    }
}
