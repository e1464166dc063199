//! Linux's x86_64 signal frame (`struct rt_sigframe`), built on the user stack when a handler
//! is entered and read back by `rt_sigreturn`.
//!
//! Layout, from the handler's RSP up: the return address (`sa_restorer`, which calls
//! `rt_sigreturn`), the `ucontext` (flags, link, `uc_stack`, `uc_mcontext` as Linux's
//! `sigcontext`, `uc_sigmask`), the `siginfo`; above it, 64-byte aligned, the FPU/SSE state in
//! `fxsave` format, which `uc_mcontext.fpstate` points at. glibc's and musl's `ucontext_t` read
//! the same offsets (`gregs` at 40, `fpregs` at 224, `uc_sigmask` at 296).

use core::arch::asm;

use super::{AltStack, SigAction, SigInfo, SA_ONSTACK, SS_AUTODISARM, SS_DISABLE, SS_ONSTACK};
use crate::errno::Errno;
use crate::idt::TrapFrame;
use crate::uaccess::{UserPtr, UserSlice};

/// Linux `struct sigcontext` (x86_64).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SigContext {
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rdi: u64,
    rsi: u64,
    rbp: u64,
    rbx: u64,
    rdx: u64,
    rax: u64,
    rcx: u64,
    rsp: u64,
    rip: u64,
    eflags: u64,
    cs: u16,
    gs: u16,
    fs: u16,
    ss: u16,
    err: u64,
    trapno: u64,
    oldmask: u64,
    cr2: u64,
    fpstate: u64,
    reserved: [u64; 8],
}

/// Linux `struct ucontext` (the kernel's: an 8-byte `uc_sigmask`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UContext {
    flags: u64,
    link: u64,
    ss_sp: u64,
    ss_flags: i32,
    pad: i32,
    ss_size: u64,
    mcontext: SigContext,
    sigmask: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RtSigframe {
    pretcode: u64,
    uc: UContext,
    info: SigInfo,
}

const _: () = assert!(core::mem::size_of::<SigContext>() == 256);
const _: () = assert!(core::mem::size_of::<UContext>() == 304);
const _: () = assert!(core::mem::size_of::<RtSigframe>() == 440);

/// `uc_flags`: the saved SS is meaningful and restored (Linux sets these on x86_64).
const UC_SIGCONTEXT_SS: u64 = 2;
const UC_STRICT_RESTORE_SS: u64 = 4;
/// The red zone below the interrupted RSP that the System V ABI lets leaf code use.
const RED_ZONE: u64 = 128;
const FXSAVE_SIZE: u64 = 512;

/// The RFLAGS bits user code may change through `rt_sigreturn` (Linux `FIX_EFLAGS`): CF, PF,
/// AF, ZF, SF, TF, DF, OF, RF, AC.
const FIX_EFLAGS: u64 =
    0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x1_0000 | 0x4_0000;
/// Cleared on entry to a handler (Linux: DF, RF, TF).
const HANDLER_CLEARS: u64 = 0x400 | 0x1_0000 | 0x100;

/// An `fxsave64` image of the user's x87/SSE registers.
#[repr(C, align(16))]
struct FxArea([u8; 512]);

impl FxArea {
    /// The live registers (the kernel never uses x87/SSE, so they are still the user's).
    fn save() -> FxArea {
        let mut area = FxArea([0; 512]);
        // SAFETY: 512 writable, 16-aligned bytes; SSE is enabled at boot.
        unsafe { asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) };
        area
    }

    /// The state a handler starts with (Linux clears the user FPU state for it): FCW 0x37f,
    /// MXCSR 0x1f80, everything else zero.
    fn initial() -> FxArea {
        let mut area = FxArea([0; 512]);
        area.0[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        area.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        area
    }

    fn mxcsr_mask(&self) -> u32 {
        match u32::from_le_bytes(self.0[28..32].try_into().expect("4 bytes")) {
            0 => 0xffbf,
            mask => mask,
        }
    }

    /// Loads the image. Reserved MXCSR bits would make `fxrstor` fault in the kernel: they are
    /// cleared first with the CPU's `MXCSR_MASK` (Linux `fpu__restore_sig` sanitizes too).
    fn restore(mut self, mxcsr_mask: u32) {
        let mxcsr = u32::from_le_bytes(self.0[24..28].try_into().expect("4 bytes")) & mxcsr_mask;
        self.0[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        // SAFETY: a 16-aligned 512-byte image whose MXCSR has no reserved bit set; the other
        // fields cannot make fxrstor fault.
        unsafe { asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack)) };
    }
}

/// What the frame builder needs besides the trap frame.
pub struct Delivery<'a> {
    pub signal: u8,
    pub info: &'a SigInfo,
    pub action: &'a SigAction,
    /// The mask to restore at `rt_sigreturn`.
    pub old_mask: u64,
    pub altstack: AltStack,
}

/// Builds the frame for a handler and points `frame` at it (Linux `setup_rt_frame`). Returns
/// the alternate stack's new state (`SS_AUTODISARM` disarms it). `EFAULT` if the frame cannot
/// be written (no `SA_RESTORER`, a bad stack, or an alternate stack overflowed): the caller
/// kills with SIGSEGV, as Linux's `force_sigsegv`.
#[doc(alias = "setup_rt_frame")]
pub fn setup(frame: &mut TrapFrame, d: &Delivery) -> Result<AltStack, Errno> {
    if d.action.flags & super::SA_RESTORER == 0 {
        return Err(Errno::EFAULT);
    }
    let alt = d.altstack;
    let on_alt = alt.contains(frame.rsp);
    let mut sp = frame.rsp.wrapping_sub(RED_ZONE);
    let entering_alt =
        d.action.flags & SA_ONSTACK != 0 && alt.size != 0 && alt.flags & SS_DISABLE == 0 && !on_alt;
    if entering_alt {
        sp = alt.sp + alt.size;
    }
    let fpstate = (sp - FXSAVE_SIZE) & !63;
    let at = ((fpstate - core::mem::size_of::<RtSigframe>() as u64) & !15) - 8;
    // Linux `get_sigframe`: a frame that leaves the alternate stack it is on is an overflow.
    if (on_alt || entering_alt) && !alt.contains(at) {
        return Err(Errno::EFAULT);
    }
    let fx = FxArea::save();
    UserSlice::new(fpstate, FXSAVE_SIZE as usize)?.write(&fx.0)?;
    let mcontext = SigContext {
        r8: frame.r8,
        r9: frame.r9,
        r10: frame.r10,
        r11: frame.r11,
        r12: frame.r12,
        r13: frame.r13,
        r14: frame.r14,
        r15: frame.r15,
        rdi: frame.rdi,
        rsi: frame.rsi,
        rbp: frame.rbp,
        rbx: frame.rbx,
        rdx: frame.rdx,
        rax: frame.rax,
        rcx: frame.rcx,
        rsp: frame.rsp,
        rip: frame.rip,
        eflags: frame.rflags,
        cs: frame.cs as u16,
        gs: 0,
        fs: 0,
        ss: frame.ss as u16,
        err: if is_exception(frame) {
            frame.error_code
        } else {
            0
        },
        trapno: if is_exception(frame) { frame.vector } else { 0 },
        oldmask: d.old_mask,
        cr2: if frame.vector == 14 {
            d.info.data[0]
        } else {
            0
        },
        fpstate,
        reserved: [0; 8],
    };
    let sigframe = RtSigframe {
        pretcode: d.action.restorer,
        uc: UContext {
            flags: UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
            link: 0,
            ss_sp: alt.sp,
            ss_flags: if alt.size == 0 || alt.flags & SS_DISABLE != 0 {
                SS_DISABLE
            } else if on_alt {
                SS_ONSTACK
            } else {
                0
            } | (alt.flags & SS_AUTODISARM),
            pad: 0,
            ss_size: alt.size,
            mcontext,
            sigmask: d.old_mask,
        },
        info: *d.info,
    };
    UserPtr::<RtSigframe>::new(at)?.write(&sigframe)?;
    let info_at = at + core::mem::offset_of!(RtSigframe, info) as u64;
    let uc_at = at + core::mem::offset_of!(RtSigframe, uc) as u64;
    frame.rsp = at;
    frame.rip = d.action.handler;
    frame.rdi = u64::from(d.signal);
    frame.rsi = info_at;
    frame.rdx = uc_at;
    frame.rax = 0;
    frame.rflags &= !HANDLER_CLEARS;
    FxArea::initial().restore(fx.mxcsr_mask());
    let mut alt = alt;
    if entering_alt && alt.flags & SS_AUTODISARM != 0 {
        alt = AltStack::default();
    }
    Ok(alt)
}

/// A frame pushed by an exception (not a system call or an interrupt).
fn is_exception(frame: &TrapFrame) -> bool {
    frame.vector < 32
}

/// What `rt_sigreturn` restores besides the registers.
pub struct Restored {
    pub mask: u64,
    pub altstack: Option<AltStack>,
}

/// Restores the registers, FPU state, mask and alternate stack saved by [`setup`] from the
/// frame at `frame.rsp - 8` (the handler's `ret` popped `pretcode`). Linux
/// `rt_sigreturn`/`restore_sigcontext`: RFLAGS only in its user bits, CS/SS stay user ones.
#[doc(alias = "restore_sigcontext")]
pub fn restore(frame: &mut TrapFrame) -> Result<Restored, Errno> {
    let at = frame.rsp.wrapping_sub(8);
    let sf = UserPtr::<RtSigframe>::new(at)?.read()?;
    let m = sf.uc.mcontext;
    let fx = if m.fpstate != 0 {
        let mut area = FxArea([0; 512]);
        UserSlice::new(m.fpstate, FXSAVE_SIZE as usize)?.read(&mut area.0)?;
        area
    } else {
        FxArea::initial()
    };
    frame.r8 = m.r8;
    frame.r9 = m.r9;
    frame.r10 = m.r10;
    frame.r11 = m.r11;
    frame.r12 = m.r12;
    frame.r13 = m.r13;
    frame.r14 = m.r14;
    frame.r15 = m.r15;
    frame.rdi = m.rdi;
    frame.rsi = m.rsi;
    frame.rbp = m.rbp;
    frame.rbx = m.rbx;
    frame.rdx = m.rdx;
    frame.rax = m.rax;
    frame.rcx = m.rcx;
    frame.rsp = m.rsp;
    frame.rip = m.rip;
    frame.rflags = (frame.rflags & !FIX_EFLAGS) | (m.eflags & FIX_EFLAGS);
    // Not an exception frame any more: no error code to report.
    frame.error_code = 0;
    let mask_source = FxArea::save();
    fx.restore(mask_source.mxcsr_mask());
    let altstack = (sf.uc.ss_flags & SS_DISABLE == 0 && sf.uc.ss_size != 0).then_some(AltStack {
        sp: sf.uc.ss_sp,
        size: sf.uc.ss_size,
        flags: sf.uc.ss_flags & SS_AUTODISARM,
    });
    Ok(Restored {
        mask: sf.uc.sigmask,
        altstack,
    })
}
