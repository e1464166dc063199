# Instruction traces of one kernel path, for the instruction counts of `cargo xtask bench`
# (issue 18): every instruction the CPU retires from a system call's or a page fault's entry to
# the return to ring 3, single-stepped through QEMU's gdb stub, then counted per function. The
# bench's figure is that count plus the fenced `rdtsc` (5) and the user instruction; `--breakdown`
# gives phases, this gives every instruction of the release kernel (no measuring marks).
#
# Use (the release kernel, `bench` as the program):
#   cargo xtask gdb --release --batch FILE -- bench
# with FILE, for the 1000th getppid and the 5000th read fault on a missing page:
#   source tools/gdb/insn_trace.py
#   python trace_syscall(110, 1000, "/tmp/getppid.txt")
#   python trace_user_fault([(4, 5000)], "/tmp/fault.txt")
#   kill
# Page-fault error codes: 4 read of a missing page, 6 write of a missing page, 7 write to a
# present read-only one (the bench's zero-page, COW copy and COW reuse rows, in that order).
# QEMU's gdb stub steps with interrupts and timers masked (its default `sstepbits`), so no tick
# lands inside a trace. Each stop on the way to the wanted one is a gdb round trip: reaching the
# 50000th fault takes several minutes on a busy machine.
import collections

import gdb

USER_END = 0x0000800000000000


def _symbol(pc):
    text = gdb.execute("info symbol %#x" % pc, to_string=True).strip()
    if text.startswith("No symbol"):
        return "?"
    return text.split(" in section")[0].rsplit(" + ", 1)[0]


def _step_to_user(label, out, limit):
    """Single-steps until the PC is back in user space; writes the per-function counts and
    the instruction addresses to `out`."""
    pcs = []
    while len(pcs) < limit:
        pc = int(gdb.parse_and_eval("$pc")) & 0xFFFFFFFFFFFFFFFF
        if pcs and pc < USER_END:
            break
        pcs.append(pc)
        gdb.execute("stepi", to_string=True)
    names = {}
    counts = collections.OrderedDict()
    for pc in pcs:
        if pc not in names:
            names[pc] = _symbol(pc)
        counts[names[pc]] = counts.get(names[pc], 0) + 1
    with open(out, "a") as f:
        f.write("== %s: %d instructions\n" % (label, len(pcs)))
        for name, n in counts.items():
            f.write("  %5d %s\n" % (n, name))
        f.write("-- pcs\n")
        for pc in pcs:
            f.write("   %#x %s\n" % (pc, names[pc]))


class _SyscallStop(gdb.Breakpoint):
    def __init__(self, nr, nth):
        super().__init__("*cowlab_syscall_entry", type=gdb.BP_HARDWARE_BREAKPOINT)
        self.nr, self.nth, self.hits = nr, nth, 0

    def stop(self):
        if int(gdb.parse_and_eval("$rax")) != self.nr:
            return False
        self.hits += 1
        return self.hits == self.nth


class _FaultStop(gdb.Breakpoint):
    def __init__(self, wanted):
        stub = int(gdb.parse_and_eval("(unsigned long)&cowlab_trap_stubs")) + 16 * 14
        super().__init__("*%#x" % stub, type=gdb.BP_HARDWARE_BREAKPOINT)
        self.wanted = wanted
        self.seen = collections.Counter()
        self.current = None

    def stop(self):
        rsp = int(gdb.parse_and_eval("$rsp"))
        err = int(gdb.parse_and_eval("*(unsigned long*)%d" % rsp))
        cs = int(gdb.parse_and_eval("*(unsigned long*)%d" % (rsp + 16)))
        if cs & 3 != 3:
            return False
        self.seen[err] += 1
        if (err, self.seen[err]) in self.wanted:
            self.current = (err, self.seen[err])
            return True
        return False


def trace_syscall(nr, nth, out, limit=50000):
    """Traces the `nth` system call number `nr` from `syscall` to `sysretq`."""
    stop = _SyscallStop(nr, nth)
    gdb.execute("continue")
    _step_to_user("syscall %d #%d" % (nr, nth), out, limit)
    stop.delete()


def trace_user_fault(wanted, out, limit=50000):
    """Traces each ring-3 page fault named in `wanted`, a list of (error code, nth), in the
    order they happen, from the entry stub to `iretq`."""
    stop = _FaultStop(wanted)
    for _ in wanted:
        gdb.execute("continue")
        _step_to_user("page fault error %d #%d" % stop.current, out, limit)
    stop.delete()
