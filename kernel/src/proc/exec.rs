//! execve and the first process: a new address space with the program loaded (see `elf`), then
//! the ring-3 frame reset to the program's entry and stack.
//!
//! execve builds the new address space completely before touching the caller, so a failure
//! (no such file, bad ELF, no memory) returns an errno to the unchanged caller. Then, as Linux
//! `de_thread`, every other thread of the group is ended and waited for, and a non-leader caller
//! takes over the leader's tid (the pid stays the process's); after that point of no return the
//! old address space is torn down. Close-on-exec descriptors are closed, the recorded signal
//! handlers reset to default (ignored signals stay ignored), FS base and FPU state cleared.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;

use cowlab_mm::AddressSpace;

use super::args::ArgStrings;
use super::switch::{FpuState, KernelStack};
use super::{alloc_pid, with_current, Group, SharedFdTable, State, Task, TABLE};
use crate::errno::Errno;
use crate::gdt::{USER_CS, USER_DS};
use crate::idt::TrapFrame;
use crate::{elf, memory, vm};

/// RFLAGS a program starts with: interrupts enabled (bit 1 is always set).
const USER_RFLAGS: u64 = 0x202;

/// A new address space with the program loaded; returns it with the entry and stack pointer,
/// and the credentials the program runs with (`cred::bprm_fill_uid`: a set-user-ID or
/// set-group-ID file's owner), which the caller commits once the exec cannot fail.
fn build(
    path: &str,
    argv: &ArgStrings,
    envp: &ArgStrings,
) -> Result<(AddressSpace, u64, u64, super::cred::Cred), Errno> {
    let (image, owner) = crate::fs::program_image(path)?;
    let old = super::cred::current();
    let (new, secure) = super::cred::bprm_fill_uid(&old, owner.mode, owner.uid, owner.gid);
    let ids = elf::ExecIds {
        uid: new.uid,
        euid: new.euid,
        gid: new.gid,
        egid: new.egid,
        secure,
    };
    let (aspace, entry, sp) = build_image(path, &image, argv, envp, &ids)?;
    Ok((aspace, entry, sp, new))
}

/// [`build`] from the program's bytes.
fn build_image(
    path: &str,
    image: &[u8],
    argv: &ArgStrings,
    envp: &ArgStrings,
    ids: &elf::ExecIds,
) -> Result<(AddressSpace, u64, u64), Errno> {
    let mm = memory::mm();
    let mut aspace = AddressSpace::new(mm)?;
    match elf::load_as(&mut aspace, image, argv, envp, path, ids) {
        Ok(loaded) => Ok((aspace, loaded.entry, loaded.stack_pointer)),
        Err(e) => {
            aspace.exit(mm);
            Err(e)
        }
    }
}

fn user_frame(entry: u64, sp: u64) -> TrapFrame {
    TrapFrame {
        rax: 0,
        rbx: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        rbp: 0,
        r8: 0,
        r9: 0,
        r10: 0,
        r11: 0,
        r12: 0,
        r13: 0,
        r14: 0,
        r15: 0,
        vector: 0,
        error_code: 0,
        rip: entry,
        cs: USER_CS,
        rflags: USER_RFLAGS,
        rsp: sp,
        ss: USER_DS,
    }
}

fn basename(path: &str) -> String {
    String::from(path.rsplit('/').next().unwrap_or(path))
}

/// execve for the current process; on success `frame` enters the new program.
pub fn execve(
    frame: &mut TrapFrame,
    path: &str,
    argv: &ArgStrings,
    envp: &ArgStrings,
) -> Result<(), Errno> {
    let (aspace, entry, sp, cred) = build(path, argv, envp)?;
    if let Err(e) = de_thread() {
        aspace.exit(memory::mm());
        return Err(e);
    }
    // The point of no return: the old program's pages go in batches with pauses (as at exit)
    // instead of in the one pass of the final teardown, which held the CPU for all of them.
    super::zap_exiting_aspace();
    super::cred::commit_creds(cred);
    let new = vm::share(aspace);
    let (old, closed) = with_current(|p| {
        p.name = basename(path);
        p.fs_base = 0;
        // The new program starts with nothing to clear at exit (Linux clears it in exec).
        p.clear_child_tid = 0;
        // Linux `flush_signal_handlers`: handlers back to default, ignored stays ignored.
        for action in p.group.lock().sigactions.iter_mut() {
            *action = super::signal::SigAction {
                handler: if action.handler == super::signal::SIG_IGN {
                    super::signal::SIG_IGN
                } else {
                    super::signal::SIG_DFL
                },
                ..Default::default()
            };
        }
        p.sig.altstack = Default::default();
        p.group.lock().job.did_exec = true;
        // Linux unshares the table before closing on exec, for every program.
        let shared = p.fds.unshare();
        (
            p.aspace.replace(new.clone()),
            (shared, p.fds.close_on_exec()),
        )
    });
    drop(closed);
    drop(vm::switch_to(Some(new)));
    if let Some(old) = old {
        // Linux `exec_mmap`: the old space's high-water mark stays the process's.
        let peak = old.read_ptl().hiwater_rss(crate::memory::mm()) * 4;
        super::with_group(|g| g.maxrss = g.maxrss.max(peak));
        // The other threads dropped theirs in de_thread: this is the last reference, unless
        // a vfork parent shares it (it waits for exactly this moment: wake it).
        super::release_aspace(old);
        super::wakeup(super::wait_channel(super::with_group(|g| g.parent)));
    }
    x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::zero());
    FpuState::initial().restore();
    *frame = user_frame(entry, sp);
    Ok(())
}

/// Linux `de_thread`: ends every other thread of the caller's group and waits until they are
/// gone; a non-leader caller then takes the leader's tid, the exited leader's entry is freed.
/// `EINTR` if the caller itself is killed meanwhile (its group is exiting).
fn de_thread() -> Result<(), Errno> {
    let me = super::current_tid();
    let tgid = super::current_pid();
    loop {
        let others = {
            let mut table = TABLE.lock();
            let mut others = 0;
            for t in table.values_mut() {
                if t.tgid != tgid || t.tid == me {
                    continue;
                }
                if matches!(t.state, State::Exited | State::Dead | State::Zombie(_)) {
                    continue;
                }
                others += 1;
                super::mark_killed(t);
                if matches!(t.state, State::Blocked { .. }) {
                    crate::proc::sched::make_runnable(t);
                }
            }
            // Dead threads leave the table once the idle loop is back from them; until then
            // their entries still use their kernel stacks.
            others
                + table
                    .values()
                    .filter(|t| t.tgid == tgid && t.state == State::Dead)
                    .count()
        };
        if others == 0 {
            break;
        }
        super::sleep(super::group_channel(tgid))?;
    }
    if me != tgid {
        let mut table = TABLE.lock();
        // The leader has exited (it is not running: we are, on the one CPU), so its kernel stack
        // is free; our entry moves under its tid. The box does not move, so the scheduler's
        // pointers into it stay valid.
        table.remove(&tgid);
        let mut task = table.remove(&me).expect("the current task is in the table");
        task.tid = tgid;
        table.insert(tgid, task);
        super::set_current(tgid, tgid);
        #[cfg(feature = "kcov")]
        crate::kcov::task_renamed(me, tgid);
    }
    Ok(())
}

/// Creates pid 1 running `path` with `argv`, its descriptors 0-2 on the console.
pub fn spawn_init(path: &str, argv: &[String]) -> Result<(), Errno> {
    let argv = ArgStrings::from_strs(argv.iter().map(String::as_str));
    // `/bin` holds BusyBox's applets on the ext2 root; `/` the programs.
    let envp = ArgStrings::from_strs(["PATH=/bin:/", "HOME=/", "TERM=vt100"]);
    // A root disk whose init cannot be loaded (a damaged image) falls back to the ramdisk's.
    let (aspace, entry, sp) = match build(path, &argv, &envp) {
        // init runs as root whatever its file's mode.
        Ok((aspace, entry, sp, _)) => (aspace, entry, sp),
        Err(e) => match crate::ramdisk::find(path) {
            Some(file) => {
                warn!("cannot start {path} from / ({e:?}); starting the ramdisk's");
                build_image(path, file.data, &argv, &envp, &elf::ExecIds::ROOT)?
            }
            None => return Err(e),
        },
    };
    let pid = alloc_pid();
    let mut kstack = KernelStack::new();
    let ctx_rsp = kstack.prepare(&user_frame(entry, sp));
    let process = Task {
        tid: pid,
        tgid: pid,
        name: basename(path),
        state: State::Runnable,
        aspace: Some(vm::share(aspace)),
        kstack,
        ctx_rsp,
        fpu: FpuState::initial(),
        fds: SharedFdTable::with_console(),
        fs_base: 0,
        killed: false,
        sigmask: 0,
        sig: Default::default(),
        clear_child_tid: 0,
        cpu: Default::default(),
        group: Group::new(
            0,
            Box::new([super::signal::SigAction::default(); 65]),
            super::rlimit::Rlimits::linux_defaults(),
            None,
        ),
        cpus_allowed: u64::MAX,
        sched: Default::default(),
    };
    // init leads the first session and its group; the console is that session's terminal.
    process.group.lock().job = super::pgrp::Job {
        pgid: pid,
        sid: pid,
        did_exec: true,
    };
    {
        let mut table = TABLE.lock();
        table.insert(pid, Box::new(process));
        if let Some(init) = table.get_mut(&pid) {
            super::sched::enqueue(init);
        }
    }
    crate::fs::tty::init(pid);
    Ok(())
}
