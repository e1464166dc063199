//! Running programs: fork + execve + wait4, with the C string arrays execve wants.

use alloc_crate::vec::Vec;
use core::ffi::CStr;

use crate::calls::{execve, exit_now, fork, waitpid};
use crate::sys::Errno;

/// NUL-terminated copies of `strings` and the NULL-terminated pointer array over them.
pub struct CArray {
    _storage: Vec<Vec<u8>>,
    pointers: Vec<*const u8>,
}

impl CArray {
    pub fn new<'a>(strings: impl IntoIterator<Item = &'a [u8]>) -> CArray {
        let storage: Vec<Vec<u8>> = strings
            .into_iter()
            .map(|s| {
                let mut v = s.to_vec();
                v.push(0);
                v
            })
            .collect();
        let mut pointers: Vec<*const u8> = storage.iter().map(|s| s.as_ptr()).collect();
        pointers.push(core::ptr::null());
        CArray {
            _storage: storage,
            pointers,
        }
    }

    pub fn as_slice(&self) -> &[*const u8] {
        &self.pointers
    }
}

/// Executes `argv[0]` with `argv` in this process (returns only on failure).
pub fn exec(argv: &[&[u8]]) -> Errno {
    let path = CArray::new(argv.first().copied());
    let args = CArray::new(argv.iter().copied());
    let env = CArray::new(crate::args::env().map(CStr::to_bytes));
    // SAFETY: `path` holds one NUL-terminated string.
    let path = unsafe { CStr::from_ptr(path.as_slice()[0].cast()) };
    execve(path, args.as_slice(), env.as_slice())
}

/// Starts `argv` in a child; returns its pid. The child exits 127 if exec fails.
pub fn spawn(argv: &[&[u8]]) -> Result<i32, Errno> {
    let pid = fork()?;
    if pid == 0 {
        let error = exec(argv);
        crate::eprintln!(
            "exec {}: errno {}",
            core::str::from_utf8(argv[0]).unwrap_or("?"),
            error.0
        );
        exit_now(127);
    }
    Ok(pid)
}

/// Runs `argv` to completion; returns its wait status.
pub fn run(argv: &[&[u8]]) -> Result<i32, Errno> {
    let pid = spawn(argv)?;
    loop {
        match waitpid(pid, 0) {
            Ok((_, status)) => return Ok(status),
            Err(Errno(crate::sys::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
}
