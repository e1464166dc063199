//! cowlab's task runner, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Thin over cargo and QEMU: `build` runs cargo for the kernel and the userland programs,
//! `image` hands their ELFs to `cowlab-boot`, `qemu` boots the image, `test` runs the test
//! tiers. The contracts it follows (kernel command line, exit statuses, the KTEST protocol,
//! the ramdisk format) are in `docs/architecture.md`.

mod bench;
mod build;
mod deps;
mod disk;
mod elf;
mod era;
mod eras;
mod fstest;
mod fuzz;
mod gdb;
mod image;
mod ktest;
mod lab;
mod libtest;
mod monitor;
mod parallel;
mod qemu;
mod report;
mod rootfs;
mod session;
mod symbolize;
mod test;
mod testname;
mod usertest;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, boot and test cowlab",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel and the userland programs, make the disk image and boot it in QEMU with
    /// the serial console on stdout; exit with the kernel's exit status.
    Qemu(qemu::QemuArgs),
    /// Host unit tests, the userland-on-host check, every in-kernel test in QEMU and the harness
    /// self-tests. Ends with a line `N passed, N failed`; exits non-zero on any failure.
    Test(test::TestArgs),
    /// Build the kernel, the userland programs, the ramdisk and the disk image; print their paths.
    Image(ImageArgs),
    /// Run the fault-path benchmark (`bench`) in deterministic QEMU (-icount), compare it with
    /// Linux 6.1 and the targets, write target/bench/results.{json,csv} and SVG charts.
    Bench(bench::BenchArgs),
    /// Fuzz the system calls with coverage feedback on a kcov kernel: `--seed S --calls N` or
    /// `--time SECS`, `--no-feedback`, `--replay FILE` (docs/fuzzing.md).
    Fuzz(fuzz::FuzzArgs),
    /// Boot a TAP test program under every era (2009..2023), print the pass/fail matrix of its
    /// cases and write it as Markdown (docs/eras/PROGRAM.md).
    Eras(eras::ErasArgs),
    /// Boot cowlab stopped in QEMU and attach gdb with the kernel's symbols and
    /// tools/gdb/cowlab.py (cowlab-ps, cowlab-vmas, cowlab-pte, cowlab-frame, pretty-printers).
    Gdb(gdb::GdbArgs),
    /// Course labs: `lab list`, `lab start NAME [DIR]` (a student tree with the lab's functions
    /// stubbed), `lab check` (every lab fails stubbed and gets full marks on this tree).
    Lab(lab::LabArgs),
    /// Run one lab's tests in a tree (default: this one) and print the score table.
    Grade(lab::GradeArgs),
}

/// What to build: shared by `qemu`, `test` and `image`.
#[derive(Args, Clone, Debug)]
pub struct BuildArgs {
    /// Build the kernel and the programs with the release profile (default: debug).
    #[arg(long)]
    pub release: bool,
    /// Also put this host file in the ramdisk (top level, under NAME or its file name), e.g. a
    /// static binary to run with `-- NAME ARGS`. Repeatable.
    #[arg(long = "add", value_name = "FILE[:NAME]")]
    pub add: Vec<PathBuf>,
    /// Boot this kernel ELF instead of building cowlab-kernel (an out-of-tree test kernel for a
    /// boot scenario, or a kernel from another checkout).
    #[arg(long, value_name = "ELF")]
    pub kernel: Option<PathBuf>,
}

#[derive(Args)]
struct ImageArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Make a UEFI (GPT) image instead of a BIOS (MBR) one.
    #[arg(long)]
    uefi: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Qemu(args) => qemu::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Image(args) => image_command(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Eras(args) => eras::run(&args),
        Command::Gdb(args) => gdb::run(&args),
        Command::Lab(args) => lab::run(&args),
        Command::Grade(args) => lab::grade_command(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn image_command(args: &ImageArgs) -> anyhow::Result<ExitCode> {
    let firmware = if args.uefi {
        cowlab_boot::Firmware::Uefi
    } else {
        cowlab_boot::Firmware::Bios
    };
    let built = image::build_all(&args.build, firmware)?;
    println!("kernel (full ELF, for gdb): {}", built.kernel_elf.display());
    println!("ramdisk: {}", built.ramdisk.display());
    println!("disk image: {}", built.image.display());
    Ok(ExitCode::SUCCESS)
}

/// The workspace root (the parent of `xtask/`). Every path xtask prints or passes is under it.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// `target/` of the workspace (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}
