//! The registers a system call and a page fault leave alone (issue 18's entry and exit work):
//! the kernel's ways back to ring 3 reload only the registers its Rust code may clobber, and
//! rely on the callee-saved ones (RBX, RBP, R12-R15) still holding the user's values. Each
//! probe loads every general-purpose register with its own pattern, makes one kernel entry and
//! stores all fifteen: a system call (getppid) keeps all but RAX, RCX and R11 (Linux's ABI); a
//! system call whose return delivers a signal (kill of itself with a SIGALRM handler, whose
//! `rt_sigreturn` leaves through the full restore) the same; a page fault (read, write, the
//! zero page's write, a COW copy after fork, a COW reuse) keeps all fifteen. The same program
//! runs on the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::Ordering;
use cowlab_userland::alarm::{handle_alarm, CAUGHT};
use cowlab_userland::calls::*;
use cowlab_userland::sys::getpid;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

/// RAX, RBX, RCX, RDX, RSI, RDI, RBP, R8-R15, in the order the probes store them.
const NAMES: [&str; 15] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// The pattern each probe loads into register `i` (RAX, RDI and RSI carry the operation's
/// own values instead).
const fn pattern(i: usize) -> u64 {
    0x5a00_0000_0000_0000 | ((i as u64 + 1) * 0x0101_0101_0101)
}

// Three probes, SysV functions: `(out: *mut [u64; 15], rax, rdi, rsi)`. Each saves the
// callee-saved registers, loads the patterns (RAX, RDI, RSI from the arguments), makes its
// kernel entry, stores the fifteen registers to `out` and restores the callee-saved ones.
macro_rules! probe {
    ($name:literal, $op:literal) => {
        core::arch::global_asm!(
            concat!(".globl ", $name),
            concat!($name, ":"),
            "    push rbx",
            "    push rbp",
            "    push r12",
            "    push r13",
            "    push r14",
            "    push r15",
            "    push rdi",
            "    mov rax, rsi",
            "    mov rdi, rdx",
            "    mov rsi, rcx",
            "    movabs rbx, {p1}",
            "    movabs rcx, {p2}",
            "    movabs rdx, {p3}",
            "    movabs rbp, {p6}",
            "    movabs r8, {p7}",
            "    movabs r9, {p8}",
            "    movabs r10, {p9}",
            "    movabs r11, {p10}",
            "    movabs r12, {p11}",
            "    movabs r13, {p12}",
            "    movabs r14, {p13}",
            "    movabs r15, {p14}",
            concat!("    ", $op),
            "    push rax",
            "    mov rax, [rsp + 8]",
            "    pop qword ptr [rax]",
            "    mov [rax + 8], rbx",
            "    mov [rax + 16], rcx",
            "    mov [rax + 24], rdx",
            "    mov [rax + 32], rsi",
            "    mov [rax + 40], rdi",
            "    mov [rax + 48], rbp",
            "    mov [rax + 56], r8",
            "    mov [rax + 64], r9",
            "    mov [rax + 72], r10",
            "    mov [rax + 80], r11",
            "    mov [rax + 88], r12",
            "    mov [rax + 96], r13",
            "    mov [rax + 104], r14",
            "    mov [rax + 112], r15",
            "    add rsp, 8",
            "    pop r15",
            "    pop r14",
            "    pop r13",
            "    pop r12",
            "    pop rbp",
            "    pop rbx",
            "    ret",
            p1 = const pattern(1),
            p2 = const pattern(2),
            p3 = const pattern(3),
            p6 = const pattern(6),
            p7 = const pattern(7),
            p8 = const pattern(8),
            p9 = const pattern(9),
            p10 = const pattern(10),
            p11 = const pattern(11),
            p12 = const pattern(12),
            p13 = const pattern(13),
            p14 = const pattern(14),
        );
    };
}

// `syscall`: the call in RAX; a read of the byte at RAX; a read-modify-write of the byte at
// RAX that leaves it unchanged.
probe!("perfentry_syscall", "syscall");
probe!("perfentry_load", "cmp byte ptr [rax], 0");
probe!("perfentry_store", "or byte ptr [rax], 0");

extern "C" {
    fn perfentry_syscall(out: *mut [u64; 15], rax: u64, rdi: u64, rsi: u64);
    fn perfentry_load(out: *mut [u64; 15], rax: u64, rdi: u64, rsi: u64);
    fn perfentry_store(out: *mut [u64; 15], rax: u64, rdi: u64, rsi: u64);
}

type Probe = unsafe extern "C" fn(*mut [u64; 15], u64, u64, u64);

/// Runs `probe` and checks every register against what it loaded (RAX against `want.rax`;
/// RCX and R11 not after a system call).
fn check(t: &mut Tester, what: &str, probe: Probe, rax: u64, rdi: u64, rsi: u64, want: Want) {
    let mut out = [0u64; 15];
    // SAFETY: the probe writes 15 words to `out`, restores the callee-saved registers and
    // returns; a system-call probe makes the call in `rax` with `rdi`/`rsi`, which the callers
    // choose harmless (getppid, a signal to itself); a memory probe touches the byte at `rax`,
    // a mapped page of this process.
    unsafe { probe(&mut out, rax, rdi, rsi) };
    let mut bad = 0;
    for (i, &got) in out.iter().enumerate() {
        let expected = match i {
            0 => want.rax,
            2 | 10 if want.syscall => continue,
            4 => rsi,
            5 => rdi,
            _ => pattern(i),
        };
        if got != expected {
            bad += 1;
            t.check_why(
                &alloc_name(what, NAMES[i]),
                false,
                format_args!("{got:#x}, want {expected:#x}"),
            );
        }
    }
    t.check(what, bad == 0);
}

#[derive(Clone, Copy)]
struct Want {
    rax: u64,
    /// RCX and R11 are the `syscall` instruction's (the return RIP and RFLAGS).
    syscall: bool,
}

fn alloc_name(what: &str, reg: &str) -> alloc::string::String {
    alloc::format!("{what}: {reg}")
}

const PROT_RW: u32 = 3;
const MAP_PRIVATE_ANON: u32 = 0x22;
const SIGALRM: u64 = 14;
const GETPPID: u64 = 110;
const KILL: u64 = 62;

fn main() -> i32 {
    let mut t = Tester::new("t_perfentry_regs");
    // SAFETY: getppid has no arguments.
    let ppid = unsafe { raw(GETPPID as usize, [0; 6]) }.unwrap_or(0) as u64;
    let sys = |rax| Want { rax, syscall: true };
    check(
        &mut t,
        "getppid keeps every register but rax, rcx, r11",
        perfentry_syscall,
        GETPPID,
        pattern(5),
        pattern(4),
        sys(ppid),
    );

    handle_alarm(0);
    let me = getpid() as u64;
    let before = CAUGHT.load(Ordering::SeqCst);
    check(
        &mut t,
        "kill(self, SIGALRM) with a handler keeps them too",
        perfentry_syscall,
        KILL,
        me,
        SIGALRM,
        sys(0),
    );
    t.eq(
        "the handler ran once on the way back",
        CAUGHT.load(Ordering::SeqCst) - before,
        1,
    );

    let len = 8 * 4096;
    let base = match mmap(0, len, PROT_RW, MAP_PRIVATE_ANON) {
        Ok(a) => a as u64,
        Err(e) => {
            t.check_why("mmap", false, format_args!("{e:?}"));
            return t.finish();
        }
    };
    let page = |i: u64| base + i * 4096 + 123;
    let fault = |addr| Want {
        rax: addr,
        syscall: false,
    };
    check(
        &mut t,
        "read fault (zero page) keeps all fifteen",
        perfentry_load,
        page(0),
        pattern(5),
        pattern(4),
        fault(page(0)),
    );
    check(
        &mut t,
        "write fault (new page) keeps all fifteen",
        perfentry_store,
        page(1),
        pattern(5),
        pattern(4),
        fault(page(1)),
    );
    check(
        &mut t,
        "write after the zero page keeps all fifteen",
        perfentry_store,
        page(0),
        pattern(5),
        pattern(4),
        fault(page(0)),
    );

    // COW: pages 2 and 3 written, then shared with a child that waits on a pipe (copy), then
    // the child gone (reuse).
    // SAFETY: pages 2 and 3 are mapped read-write above.
    unsafe {
        *(page(2) as *mut u8) = 7;
        *(page(3) as *mut u8) = 9;
    }
    let Ok([r, w]) = pipe() else {
        t.check("pipe", false);
        return t.finish();
    };
    match fork() {
        Ok(0) => {
            let _ = close(w);
            let mut b = [0u8; 1];
            let _ = read(r, &mut b);
            exit_now(0);
        }
        Ok(child) => {
            let _ = close(r);
            check(
                &mut t,
                "COW copy fault keeps all fifteen",
                perfentry_store,
                page(2),
                pattern(5),
                pattern(4),
                fault(page(2)),
            );
            let _ = write(w, b"x");
            let _ = close(w);
            let status = waitpid(child, 0).map(|(_, s)| s);
            t.check(
                "child exited 0",
                matches!(status, Ok(s) if wifexited(s) && wexitstatus(s) == 0),
            );
            check(
                &mut t,
                "COW reuse fault keeps all fifteen",
                perfentry_store,
                page(3),
                pattern(5),
                pattern(4),
                fault(page(3)),
            );
            // SAFETY: pages 2 and 3 are still mapped; the probes left their bytes unchanged.
            let kept = unsafe { (*(page(2) as *const u8), *(page(3) as *const u8)) };
            t.eq("the faulting stores left the bytes", kept, (7, 9));
        }
        Err(e) => t.check_why("fork", false, format_args!("{e:?}")),
    }
    let _ = munmap(base as usize, len);
    t.finish()
}
