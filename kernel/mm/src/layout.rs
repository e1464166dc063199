//! Where exec put a program's argument and environment strings, and which file it ran (Linux
//! keeps `arg_start`, `arg_end`, `env_start`, `env_end` and `exe_file` in `mm_struct`): what
//! `/proc/<pid>/cmdline`, `environ`-style readers and `/proc/<pid>/exe` report. Belongs to the
//! address space, so fork copies it and exec replaces it with the new space.
#![deny(unsafe_code)]

use alloc::sync::Arc;

use crate::aspace::AddressSpace;

#[derive(Clone, Default, Debug)]
pub struct ExecLayout {
    /// `argv[0]`'s first byte up to the byte after the last argument's NUL.
    pub arg_start: u64,
    pub arg_end: u64,
    /// The environment strings, right after the arguments.
    pub env_end: u64,
    /// The absolute path exec loaded (Linux `exe_file`).
    pub exe: Option<Arc<str>>,
}

impl AddressSpace {
    pub fn exec_layout(&self) -> &ExecLayout {
        &self.layout
    }

    /// Recorded by the program loader once the strings are on the new stack.
    pub fn set_exec_layout(&mut self, layout: ExecLayout) {
        self.layout = layout;
    }
}
