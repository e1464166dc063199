//! What each vector does once its registers are saved.
//!
//! Three outcomes only: handle and return (breakpoint, timer and other IRQs), recover through an
//! exception-table fixup (a page fault or #GP at a registered instruction, see `extable`), or
//! die with a full dump ([`super::dump::die`]). Ring-3 traps will branch off here in the next
//! issue (signals, and the page-fault handler of `cowlab-mm`); for now every exception is a
//! kernel one.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::registers::control::Cr2;

use super::{dump, vector, TrapFrame};
use crate::{extable, pic, time, vm};

static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

/// How many `int3` breakpoints the kernel has handled since boot.
pub fn breakpoint_count() -> u64 {
    BREAKPOINTS.load(Ordering::SeqCst)
}

/// Called by `trap_common` with interrupts disabled and all registers saved in `*frame`; the
/// registers are restored from `*frame` when it returns.
pub(super) extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let number = frame.vector as u8;
    match number {
        vector::BREAKPOINT => {
            BREAKPOINTS.fetch_add(1, Ordering::SeqCst);
            // RIP already points past the one-byte `int3`, so returning continues after it.
            info!("breakpoint (#BP) at rip={:#x}, continuing", frame.rip - 1);
        }
        vector::PAGE_FAULT => {
            let cr2 = Cr2::read_raw();
            if vm::is_user_address(cr2) && vm::handle_page_fault(cr2, frame.error_code).is_ok() {
                return;
            }
            match extable::search(frame.rip) {
                Some(fixup) => extable::fixup(frame, fixup, cr2),
                None => dump::die(frame),
            }
        }
        vector::GENERAL_PROTECTION => match extable::search(frame.rip) {
            Some(fixup) => extable::fixup(frame, fixup, 0),
            None => dump::die(frame),
        },
        irq if irq >= vector::PIC_BASE => interrupt(irq - vector::PIC_BASE),
        _ => dump::die(frame),
    }
}

/// A hardware interrupt on PIC line `line`.
fn interrupt(line: u8) {
    if pic::is_spurious(line) {
        return;
    }
    if line == vector::TIMER - vector::PIC_BASE {
        time::on_tick();
    }
    // Other lines are masked; one that fires anyway is acknowledged and otherwise ignored.
    pic::end_of_interrupt(line);
}
