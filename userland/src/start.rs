//! Process entry: from the initial stack Linux (and cowlab's `execve`) builds to `main`.
//!
//! At `_start`, `rsp` is 16-byte aligned and points at `argc`, followed by `argc` pointers to
//! NUL-terminated arguments, a NULL, the environment pointers and another NULL (then the
//! auxiliary vector, which we do not read). No register other than `rsp` carries anything we use.

use crate::{args, sys};

unsafe extern "Rust" {
    /// Defined by the program through [`crate::entry!`].
    safe fn __cowlab_user_main() -> i32;
}

/// The ELF entry point.
///
/// # Safety
/// Only the kernel may enter it, with the initial process stack described in the module docs.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        // Zero rbp so that frame-pointer walks (debuggers, the kernel's backtraces) end here.
        "xor ebp, ebp",
        "mov rdi, rsp",
        // The ABI guarantees the alignment; make sure anyway, a `call` then leaves rsp = 8 mod 16
        // in the callee as every function expects.
        "and rsp, -16",
        "call {start_rust}",
        "ud2",
        start_rust = sym start_rust,
    )
}

/// Records the arguments and environment, runs `main`, exits with its status.
///
/// # Safety
/// `sp` points at the initial process stack (`argc`, then the pointer arrays).
unsafe extern "C" fn start_rust(sp: *const usize) -> ! {
    // SAFETY: the kernel laid out argc, argv[argc + 1] and envp (NULL-terminated) from `sp` up,
    // and they live as long as the process (obligation of `_start`).
    unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        let envp = argv.add(argc + 1);
        args::init(argc, argv, envp);
    }
    sys::exit_group(__cowlab_user_main())
}
