//! Program arguments that hold spaces, quotes, backslashes or non-ASCII text, or are empty,
//! arrive intact in `argv`. Without arguments the program execs itself with [`EXPECTED`] (the
//! kernel's execve copying them; on the host Linux's); with arguments it checks they are exactly
//! [`EXPECTED`]. xtask also boots it as `-- t_abi2_args ARGS...` with the arguments quoted on the
//! kernel command line (usertest.rs `OPTION_RUNS`), so the kernel's `cmdline::split_init_args`
//! and init's spawn deliver them.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use cowlab_userland::test::Tester;
use cowlab_userland::{args, process};

cowlab_userland::entry!(main);

/// The arguments after `argv[0]`, in order (xtask's OPTION_RUNS line quotes the same list).
const EXPECTED: [&str; 8] = [
    "sh",
    "-c",
    "ls | wc -l",
    "",
    "two  spaces",
    "q\"uo'te\\",
    "gr\u{fc}\u{df}e \u{2603}",
    "",
];

fn main() -> i32 {
    let argv: Vec<&[u8]> = args().map(|a| a.to_bytes()).collect();
    if argv.len() == 1 {
        let mut again: Vec<&[u8]> = Vec::from([argv[0]]);
        again.extend(EXPECTED.iter().map(|a| a.as_bytes()));
        let error = process::exec(&again);
        let mut t = Tester::new("t_abi2_args");
        t.check_why("exec of itself with the arguments", false, error.0);
        return t.finish();
    }
    let mut t = Tester::new("t_abi2_args");
    t.eq("argument count", argv.len() - 1, EXPECTED.len());
    for (i, want) in EXPECTED.iter().enumerate() {
        let got = argv.get(i + 1).copied().unwrap_or(b"<missing>");
        let shown = core::str::from_utf8(got).unwrap_or("<not UTF-8>");
        t.check_why(
            &alloc::format!("argv[{}] is {want:?}", i + 1),
            got == want.as_bytes(),
            alloc::format!("got {shown:?}"),
        );
    }
    t.finish()
}
