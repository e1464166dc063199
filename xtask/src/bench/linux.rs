//! `cargo xtask bench --linux`: the same `bench` binary as `/init` of Debian's Linux kernel, in
//! the same deterministic QEMU as cowlab, so both columns come from one run.
//!
//! The kernel is Debian's `linux-image-<abi>-amd64` package (the one `linux-image-amd64`
//! depends on), fetched once with `apt-get download` into `target/linux/` and unpacked with
//! `dpkg-deb -x`. Of its modules only [`MODULES`] are kept (virtio-pci, virtio-blk and ext4,
//! which serves ext2 in Debian's configuration, with their dependencies), so the file rows
//! measure Linux's ext2 on the same image as cowlab's: the image is attached as Linux's only
//! virtio disk (a snapshot) and `bench` loads the modules and mounts it. The initramfs is an
//! uncompressed `newc` cpio archive written here: `/dev/console`, `/init` (the static `bench`)
//! and `/modules/NN.ko` in load order. `bench` powers the machine off when it is done (an
//! `/init` that exits panics Linux), which ends QEMU with status 0.
//!
//! Determinism: `-icount shift=0,sleep=off` and the virtual-clock RTC make every instruction
//! count repeat; `nokaslr` and `norandmaps` keep the kernel's and the program's addresses (so
//! which faults need a new page-table page) the same on every boot; qboot instead of SeaBIOS
//! ([`FIRMWARE`]) keeps the disk's host-timed requests out of the boot, so the kernel starts at
//! the same instruction count and its random pool, seeded from the TSC, is the same (`bench`
//! prints its first `getrandom` bytes, `BENCH-RANDOM`, and xtask compares them between boots).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::qemu::ICOUNT_ARGS;
use crate::target_dir;

/// The Linux kernel command line: the console on the serial port, quiet, and the two switches
/// that fix addresses between boots. `panic=-1` turns a crash into an immediate reboot, which
/// `-no-reboot` turns into the end of QEMU.
pub const CMDLINE: &str = "console=ttyS0 quiet nokaslr norandmaps panic=-1";

/// Added for the SMP boot: Linux boots on one CPU and `bench smp` brings the other three online
/// through sysfs (`linux_online_cpus` in `userland/src/bin/bench/smp.rs`: under QEMU 7.2's
/// `-icount` round-robin, Linux 6.1's boot-time bring-up of the APs never ends).
pub const SMP_CMDLINE: &str = "maxcpus=1";

/// The firmware that loads the kernel of the one-CPU boot: qboot (shipped with QEMU, found in its data directory),
/// not the default SeaBIOS. SeaBIOS sets up the virtio disk before it starts the kernel, and
/// the disk's requests complete in host time, so the kernel started at a different instruction
/// count on each boot: two boots' `getrandom` bytes differed (the entropy pool mixes the TSC)
/// and, with every timer's phase shifted, so did `fork_touched_mib_256` and `thp_fault_2m`.
/// qboot only loads the kernel. (cowlab boots from its disk image through SeaBIOS's BIOS
/// calls, which qboot does not have; its boots repeat.)
pub const FIRMWARE: &str = "qboot.rom";

/// The Debian metapackage whose dependency names the current kernel package.
const META: &str = "linux-image-amd64";

/// The modules `bench` loads (`finit_module`, in this order: each after what it depends on,
/// per the modules' `depends=`), below `lib/modules/<release>/`.
const MODULES: &[&str] = &[
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/lib/crc16.ko",
    "kernel/fs/mbcache.ko",
    "kernel/fs/jbd2/jbd2.ko",
    "kernel/crypto/crc32c_generic.ko",
    "kernel/fs/ext4/ext4.ko",
];

/// An unpacked Debian kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The bzImage (`boot/vmlinuz-<release>`).
    pub vmlinuz: PathBuf,
    /// The package, e.g. `linux-image-6.1.0-57-amd64`.
    pub package: String,
    /// The package version, e.g. `6.1.158-1`: the upstream release plus Debian's revision.
    pub version: String,
}

impl Kernel {
    /// The kept modules ([`MODULES`]) in load order, next to the unpacked kernel.
    pub fn modules(&self) -> Vec<PathBuf> {
        let dir = self
            .vmlinuz
            .parent()
            .and_then(Path::parent)
            .map(|r| r.join("modules"));
        let dir = dir.unwrap_or_default();
        (0..MODULES.len())
            .map(|i| dir.join(format!("{i:02}.ko")))
            .collect()
    }

    /// `linux-image-6.1.0-57-amd64 6.1.158-1`.
    pub fn describe(&self) -> String {
        format!("Debian {} {}", self.package, self.version)
    }
}

/// The kernel under `target/linux/`, fetching and unpacking it the first time.
pub fn kernel() -> Result<Kernel> {
    let dir = target_dir().join("linux");
    let record = dir.join("kernel.txt");
    if let Some(kernel) = std::fs::read_to_string(&record)
        .ok()
        .and_then(|text| parse_record(&dir, &text))
        .filter(|k| k.vmlinuz.is_file() && k.modules().iter().all(|m| m.is_file()))
    {
        return Ok(kernel);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let package = match kernel_package() {
        Ok(p) => p,
        Err(_) => {
            // A fresh machine may have no package lists yet.
            eprintln!("xtask: {META} not known to apt; running apt-get update");
            run(Command::new("apt-get").arg("update"), "apt-get update")?;
            kernel_package()?
        }
    };
    eprintln!(
        "xtask: downloading {package} (apt-get download) into {}",
        dir.display()
    );
    for old in debs(&dir)? {
        let _ = std::fs::remove_file(old);
    }
    run(
        Command::new("apt-get")
            .current_dir(&dir)
            .args(["download", &package]),
        "apt-get download",
    )?;
    let deb = match debs(&dir)?.as_slice() {
        [deb] => deb.clone(),
        other => bail!(
            "apt-get download left {} .deb files in {}",
            other.len(),
            dir.display()
        ),
    };
    let version = capture(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Version"),
        "dpkg-deb -f",
    )?;
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    )?;
    let release = package
        .strip_prefix("linux-image-")
        .context("kernel package name")?;
    let kernel = Kernel {
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        package: package.clone(),
        version: version.trim().to_owned(),
    };
    if !kernel.vmlinuz.is_file() {
        bail!("{} has no {}", deb.display(), kernel.vmlinuz.display());
    }
    // Only boot/ and the modules the bench loads are kept (all of them are some 400 MB).
    let modules = root.join("modules");
    std::fs::create_dir_all(&modules)?;
    for (i, m) in MODULES.iter().enumerate() {
        let from = root.join("lib/modules").join(release).join(m);
        std::fs::copy(&from, modules.join(format!("{i:02}.ko")))
            .with_context(|| format!("keeping {}", from.display()))?;
    }
    for unused in ["lib", "usr", "etc"] {
        let _ = std::fs::remove_dir_all(root.join(unused));
    }
    let _ = std::fs::remove_file(&deb);
    std::fs::write(&record, format!("{}\n{}\n", kernel.package, kernel.version))
        .with_context(|| format!("writing {}", record.display()))?;
    Ok(kernel)
}

fn parse_record(dir: &Path, text: &str) -> Option<Kernel> {
    let mut lines = text.lines();
    let package = lines.next()?.trim().to_owned();
    let version = lines.next()?.trim().to_owned();
    let release = package.strip_prefix("linux-image-")?;
    Some(Kernel {
        vmlinuz: dir.join("root/boot").join(format!("vmlinuz-{release}")),
        package,
        version,
    })
}

/// The kernel package `linux-image-amd64` depends on (`apt-cache depends`).
fn kernel_package() -> Result<String> {
    let out = capture(
        Command::new("apt-cache").args(["depends", META]),
        "apt-cache depends",
    )?;
    package_from_depends(&out)
        .with_context(|| format!("apt-cache depends {META}: no kernel package"))
}

fn package_from_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_owned)
}

fn debs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            out.push(path);
        }
    }
    Ok(out)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn capture(command: &mut Command, what: &str) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes the initramfs: `/dev/console` (so `/init` has its standard streams), `/init`, and
/// the modules as `/modules/NN.ko`.
pub fn initramfs(bench: &Path, modules: &[PathBuf], out: &Path) -> Result<()> {
    let program = std::fs::read(bench).with_context(|| format!("reading {}", bench.display()))?;
    let mut cpio = Cpio::default();
    cpio.entry("dev", 0o040_755, 0, &[]);
    cpio.entry("dev/console", 0o020_600, (5 << 8) | 1, &[]);
    cpio.entry("init", 0o100_755, 0, &program);
    cpio.entry("modules", 0o040_755, 0, &[]);
    for (i, m) in modules.iter().enumerate() {
        let data = std::fs::read(m).with_context(|| format!("reading {}", m.display()))?;
        cpio.entry(&format!("modules/{i:02}.ko"), 0o100_644, 0, &data);
    }
    std::fs::write(out, cpio.finish()).with_context(|| format!("writing {}", out.display()))
}

/// A `newc` (SVR4, no CRC) cpio archive, the format the Linux initramfs unpacker reads: per entry
/// a 110-byte ASCII header of 13 eight-digit hex fields, the NUL-terminated name, padding to 4,
/// the data, padding to 4; a `TRAILER!!!` entry ends it.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
}

impl Cpio {
    /// `rdev` is `major << 8 | minor` for device nodes.
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime: fixed, so the archive is the same on every build
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.bytes
    }
}

/// The kernel command line: [`CMDLINE`], then `-- rows=smp` for the SMP boot (`--smp`) or
/// `-- rows=<groups>` (`--rows`), which Linux passes to `/init` as its argument (`bench
/// rows=smp`: only the multiprocessor rows, as `bench smp` on cowlab; `bench rows=...`: only
/// those groups). A word without `=` after `--` did not reach `/init` on 6.1.
pub fn cmdline(smp: bool, rows: Option<&str>) -> String {
    match (smp, rows) {
        (true, _) => format!("{CMDLINE} {SMP_CMDLINE} -- rows=smp"),
        (false, Some(rows)) => format!("{CMDLINE} -- rows={rows}"),
        (false, None) => CMDLINE.to_owned(),
    }
}

/// The QEMU command booting `kernel` with `initrd`: the machine of the cowlab run
/// (`-m 1G -cpu qemu64 -accel tcg`, icount, the fixed RTC, `-no-reboot`, serial on stdio), with
/// the kernel loaded by QEMU instead of from a disk, and `disk` (cowlab's root image) as the
/// only virtio disk, a snapshot. With `smp`, the SMP boot: `-smp` [`super::SMP_CPUS`] (one
/// round-robin TCG thread under icount, as cowlab's), no disk, `maxcpus=1` and `bench rows=smp`.
pub fn command(
    qemu: &Path,
    kernel: &Kernel,
    initrd: &Path,
    disk: &Path,
    smp: bool,
    rows: Option<&str>,
) -> Command {
    let mut command = Command::new(qemu);
    // The SMP boot has no disk, as cowlab's (its rows touch no file), and so needs no other
    // firmware: without a disk SeaBIOS's set-up repeats (two 4-CPU boots gave the same rows).
    if !smp {
        let mut drive = std::ffi::OsString::from("file=");
        drive.push(disk);
        drive.push(",format=raw,if=virtio,snapshot=on");
        command.arg("-drive").arg(drive);
        command.args(["-bios", FIRMWARE]);
    }
    command
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(cmdline(smp, rows))
        .args([
            "-serial",
            "stdio",
            "-display",
            "none",
            "-no-reboot",
            "-m",
            "1G",
        ])
        .args(["-cpu", "qemu64", "-accel", "tcg"])
        .args(ICOUNT_ARGS);
    if smp {
        command.args(["-smp", &super::SMP_CPUS.to_string()]);
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_boots_in_cowlabs_qemu_configuration() {
        use crate::qemu::{show_command, Accel, Machine};
        let kernel = Kernel {
            vmlinuz: PathBuf::from("/t/vmlinuz-6.1.0-57-amd64"),
            package: "linux-image-6.1.0-57-amd64".into(),
            version: "6.1.192-3".into(),
        };
        let linux = show_command(&command(
            Path::new("qemu"),
            &kernel,
            Path::new("/t/i.cpio"),
            Path::new("/t/root.img"),
            false,
            None,
        ));
        let cowlab = show_command(
            &Machine {
                image: PathBuf::from("/t/cowlab.img"),
                ovmf: None,
                accel: Accel::Icount,
                gdb: false,
                cmdline: String::new(),
                disk: None,
                root: None,
            }
            .command(Path::new("qemu")),
        );
        // The machine both kernels run on: memory, CPU, accelerator, icount, the fixed RTC.
        let machine = "-m 1G -cpu qemu64 -accel tcg -icount shift=0,sleep=off \
                       -rtc base=2024-01-01T00:00:00,clock=vm";
        assert!(cowlab.contains(machine), "{cowlab}");
        assert!(linux.contains(machine), "{linux}");
        for option in ["-no-reboot", "-serial stdio", "-display none"] {
            assert!(
                linux.contains(option) && cowlab.contains(option),
                "{option}"
            );
        }
        assert!(linux.contains("-kernel /t/vmlinuz-6.1.0-57-amd64 -initrd /t/i.cpio"));
        assert!(linux.contains("nokaslr norandmaps"), "{linux}");
        assert!(linux.contains("-bios qboot.rom"), "{linux}");
        // cowlab's root image, for the file rows on Linux's ext2.
        assert!(
            linux.contains("-drive file=/t/root.img,format=raw,if=virtio,snapshot=on"),
            "{linux}"
        );
        assert!(!linux.contains("-smp"), "{linux}");
        // The SMP boot: 4 CPUs under the same icount (round-robin, one thread), `bench smp`.
        let smp = show_command(&command(
            Path::new("qemu"),
            &kernel,
            Path::new("/t/i.cpio"),
            Path::new("/t/root.img"),
            true,
            None,
        ));
        assert!(smp.contains(machine), "{smp}");
        assert!(smp.contains("-smp 4"), "{smp}");
        assert!(!smp.contains("-drive") && !smp.contains("-bios"), "{smp}");
        assert!(!smp.contains("thread=multi"), "{smp}");
        assert!(
            smp.contains("norandmaps panic=-1 maxcpus=1 -- rows=smp'"),
            "{smp}"
        );
        assert_eq!(kernel.modules().len(), MODULES.len());
        assert!(kernel.modules()[0].ends_with("modules/00.ko"));
        assert_eq!(
            kernel.describe(),
            "Debian linux-image-6.1.0-57-amd64 6.1.192-3"
        );
    }

    #[test]
    fn the_kernel_package_is_the_metapackages_dependency() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            package_from_depends(out).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(package_from_depends("linux-image-amd64\n"), None);
    }

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut cpio = Cpio::default();
        cpio.entry("init", 0o100_755, 0, b"abc");
        cpio.entry("dev/console", 0o020_600, (5 << 8) | 1, &[]);
        let bytes = cpio.finish();
        assert!(bytes.starts_with(b"070701"));
        // Header 110 + "init\0" 5 = 115 -> 116, data 3 -> 120.
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..119], b"abc");
        let second = &bytes[120..];
        assert!(second.starts_with(b"070701"));
        // Fields 10 and 11 (rdev major, minor) of the console node.
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        assert_eq!((field(second, 9), field(second, 10)), (5, 1));
        assert_eq!(field(second, 1), 0o020_600);
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
