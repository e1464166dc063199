//! Course labs (docs/labs/): `cargo xtask lab start NAME [DIR]` writes a student tree with the
//! lab's functions stubbed, `cargo xtask grade NAME [DIR]` runs exactly the lab's tests and prints
//! a score table, `cargo xtask lab check` verifies every lab both ways (the stubbed tree fails
//! its grade, the real tree gets full marks).
//!
//! The regions a student implements are marked once in the source, as comments:
//!
//! ```text
//!     // lab(cow): begin
//!     // lab(cow): stub: let _ = (era, page);
//!     // lab(cow): stub: WpReuse::Copy
//!     ...the real body...
//!     // lab(cow): end
//! ```
//!
//! `lab start` replaces the lines between `begin` and `end` by the `stub:` lines: code that
//! compiles and returns a wrong but typed answer, so the kernel keeps running and the lab's
//! tests fail with a message instead of a panic taking the whole kernel down.

mod grade;
mod tree;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

pub use grade::{check_all, grade_command, GradeArgs};

/// One graded test of a lab.
#[derive(Debug, Clone, Copy)]
pub struct Graded {
    pub points: u32,
    pub check: Check,
}

#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// A `cowlab-mm` unit test, by its full libtest name (`rules::tests::wp_reuse_per_era`).
    Host(&'static str),
    /// A case of a TAP test program booted in QEMU under the default era: the first TAP line
    /// whose description starts with this text must be `ok`.
    Tap {
        program: &'static str,
        case: &'static str,
    },
    /// The program's own summary line (`t_x: N passed, 0 failed`) and frames back to the boot
    /// count.
    Program(&'static str),
    /// [`Check::Program`] booted under an older rule set, as the era runs of `cargo xtask test`
    /// do: `--era ERA -- PROGRAM era=ERA` (the argument makes the program assert the era's
    /// historical behaviour).
    EraProgram { program: &'static str, era: u32 },
}

/// A lab: its name (the marker's), its handout and its tests.
#[derive(Debug)]
pub struct Lab {
    pub name: &'static str,
    pub number: u32,
    pub title: &'static str,
    /// Whether `lab start` stubs anything (lab 6 is a measurement lab on the real tree).
    pub stubbed: bool,
    pub tests: &'static [Graded],
}

const fn host(points: u32, name: &'static str) -> Graded {
    Graded {
        points,
        check: Check::Host(name),
    }
}

const fn tap(points: u32, program: &'static str, case: &'static str) -> Graded {
    Graded {
        points,
        check: Check::Tap { program, case },
    }
}

pub const LABS: &[Lab] = &[
    Lab {
        name: "cow",
        number: 1,
        title: "Copy-on-write and the exclusive bit",
        stubbed: true,
        tests: &[
            host(10, "rules::tests::wp_reuse_per_era"),
            host(5, "tests::fork_tests::fork_then_write_in_child"),
            host(5, "tests::fork_tests::fork_then_write_in_parent"),
            host(5, "tests::fork_tests::fork_after_child_exit_reuses_without_copy"),
            host(5, "tests::fault_tests::exclusive_page_is_reused_after_write_protection"),
            host(
                5,
                "tests::era_tests::mapcount_rule_of_2009_reuses_a_page_with_an_extra_reference",
            ),
            host(
                5,
                "tests::era_tests::refcount_rule_of_2020_copies_a_page_with_an_extra_reference",
            ),
            host(10, "tests::conformance::expected_outcome_per_era"),
            tap(5, "t_cow", "Basic COW after fork() (base page)"),
            tap(5, "t_cow", "vmsplice() + unmap in child (base page)"),
            tap(
                10,
                "t_cow",
                "R/O-mapping a page registered as iouring fixed buffer",
            ),
        ],
    },
    Lab {
        name: "pins",
        number: 2,
        title: "Pins and fork (seed 003)",
        stubbed: true,
        tests: &[
            host(10, "rules::tests::fork_copy_per_era"),
            host(10, "tests::gup_tests::pins_and_references_are_counted_exactly"),
            host(10, "tests::fork_tests::fork_of_pinned_exclusive_page_copies_for_child"),
            host(
                5,
                "tests::fork_tests::forks_copy_of_a_pinned_page_is_writable_in_the_child",
            ),
            host(
                5,
                "tests::era_tests::fork_with_a_dma_buffer_loses_the_parents_data_before_2020",
            ),
            host(5, "tests::regbuf_tests::fork_with_a_registered_buffer_per_era"),
            host(5, "tests::conformance::expected_outcome_per_era"),
            tap(10, "t_cow", "fork() with an iouring fixed buffer"),
        ],
    },
    Lab {
        name: "unshare",
        number: 3,
        title: "Reliable R/O pins (seeds 000/004)",
        stubbed: true,
        tests: &[
            host(10, "rules::tests::unshare_rule"),
            host(10, "tests::gup_tests::ro_pin_on_ro_mapped_anon_pages_per_era"),
            host(
                5,
                "tests::gup_tests::ro_longterm_pin_of_the_zero_page_sees_later_writes_from_2022",
            ),
            host(
                5,
                "tests::shmem_tests::ro_longterm_pin_of_a_private_memfd_page_sees_later_writes_from_2022",
            ),
            host(
                5,
                "tests::gup_tests::longterm_ro_pin_of_an_untouched_page_faults_twice_into_an_exclusive_page",
            ),
            host(5, "tests::conformance::expected_outcome_per_era"),
            tap(10, "t_cow", "R/O GUP pin on R/O-mapped shared page (base page)"),
            tap(5, "t_cow", "R/O GUP-fast pin on R/O-mapped shared page (base page)"),
        ],
    },
    Lab {
        name: "dirtycow",
        number: 4,
        title: "Dirty COW",
        stubbed: true,
        tests: &[
            host(10, "rules::tests::follow_write_rule"),
            host(
                10,
                "tests::shmem_tests::dirty_cow_race_leaks_only_under_the_2009_rules",
            ),
            host(
                5,
                "tests::shmem_tests::dirty_cow_pattern_interleaved_never_reaches_the_memfd",
            ),
            host(
                5,
                "tests::gup_tests::force_write_through_proc_mem_breaks_cow_in_every_era",
            ),
            host(
                5,
                "tests::gup_tests::write_gup_needs_prot_write_or_force_on_a_cow_mapping",
            ),
            host(5, "tests::conformance::expected_outcome_per_era"),
            Graded {
                points: 10,
                check: Check::Program("t_proc"),
            },
        ],
    },
    Lab {
        name: "writeback",
        number: 5,
        title: "Writeback and long-term pins (seed 002)",
        stubbed: true,
        tests: &[
            host(10, "rules::tests::longterm_write_pin_rule"),
            host(
                10,
                "tests::pagecache_tests::longterm_write_pins_of_shared_file_mappings_follow_the_era",
            ),
            host(
                5,
                "tests::pagecache_tests::writeback_write_protects_and_the_next_store_notifies",
            ),
            Graded {
                points: 10,
                check: Check::Program("t_seed002"),
            },
            Graded {
                points: 5,
                check: Check::EraProgram {
                    program: "t_seed002",
                    era: 2022,
                },
            },
        ],
    },
    Lab {
        name: "measure",
        number: 6,
        title: "Measure a fault",
        stubbed: false,
        tests: &[],
    },
];

/// The lab named `name`, or an error listing the labs.
pub fn find(name: &str) -> Result<&'static Lab> {
    LABS.iter().find(|l| l.name == name).ok_or_else(|| {
        let names: Vec<&str> = LABS.iter().map(|l| l.name).collect();
        anyhow::anyhow!("unknown lab {name:?}: the labs are {}", names.join(", "))
    })
}

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Write a student tree for lab NAME: a copy of this repository with the lab's functions
    /// replaced by stubs that compile and fail the lab's tests. DIR defaults to
    /// ../cowlab-NAME next to this repository.
    Start {
        name: String,
        dir: Option<PathBuf>,
        /// Write into DIR even if it exists (files are replaced, DIR/target is kept).
        #[arg(long)]
        force: bool,
    },
    /// List the labs with their handouts and points.
    List,
    /// For every lab: the stubbed tree fails its grade, this tree gets full marks (a CI check;
    /// the stubbed trees are built in target/lab-check/).
    Check {
        /// Check only these labs (default: every lab with a stub).
        names: Vec<String>,
    },
}

pub fn run(args: &LabArgs) -> Result<ExitCode> {
    match &args.command {
        LabCommand::Start { name, dir, force } => {
            let lab = find(name)?;
            let dir = dir.clone().unwrap_or_else(|| {
                crate::workspace_root()
                    .parent()
                    .unwrap_or(crate::workspace_root())
                    .join(format!("cowlab-{}", lab.name))
            });
            let stubbed = tree::write_student_tree(crate::workspace_root(), &dir, lab, *force)?;
            println!(
                "lab {} ({}): student tree in {}",
                lab.number,
                lab.title,
                dir.display()
            );
            for (file, regions) in &stubbed {
                println!("  {file}: {regions} region(s) to implement");
            }
            println!(
                "read docs/labs/{}.md there; grade with `cargo xtask grade {}` inside it",
                lab.name, lab.name
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::List => {
            for lab in LABS {
                let total: u32 = lab.tests.iter().map(|t| t.points).sum();
                println!(
                    "lab {} {:<9} {:<40} {:>3} points  docs/labs/{}.md",
                    lab.number, lab.name, lab.title, total, lab.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Check { names } => grade::check(names),
    }
}
