# cowlab's gdb helpers: `source tools/gdb/cowlab.py` (cargo xtask gdb does it).
#
# Pretty-printers for the mm crate's Pte (frame and decoded flags), FrameMeta (counts and flags),
# VirtAddr/PhysAddr (hex), and commands that walk the kernel's own structures:
#   cowlab-ps                 the task table: tid, tgid, state, name, page-table root
#   cowlab-vmas PID           the VMAs of a task's address space
#   cowlab-pte PID ADDR       the page-table walk of ADDR in a task's address space
#   cowlab-frame PFN          a frame's metadata (refcount, mapcount, pincount, flags)
#   cowlab-break NAME         breakpoints on every instance of a (generic) function by short name
# The kernel's layouts are read from its debug info, so the script follows field renames that
# keep the names below; what it cannot find it reports instead of guessing.

import re

import gdb

PTE_FLAGS = [
    (0, "P"), (1, "W"), (2, "U"), (3, "PWT"), (4, "PCD"), (5, "A"), (6, "D"), (7, "HUGE"),
    (8, "G"), (9, "SOFTDIRTY"), (10, "PROTNONE"), (63, "NX"),
]
FRAME_FLAGS = [
    (0, "ANON"), (1, "ANON_EXCLUSIVE"), (2, "DIRTY"), (3, "WRITEBACK"), (4, "ZERO"),
    (5, "PAGECACHE"), (6, "SHMEM"), (7, "PAGETABLE"), (30, "FREE"), (31, "RESERVED"),
]
VMA_FLAGS = [
    (0, "MAYREAD"), (1, "MAYWRITE"), (2, "MAYEXEC"), (3, "DONTFORK"), (4, "SOFTDIRTY"),
    (5, "GROWSDOWN"), (6, "LOCKED"),
]
ADDR_MASK = 0x000FFFFFFFFFF000
KERNEL_BASE = 0xFFFFFFFF80000000


def decode(value, table):
    names = [name for bit, name in table if value & (1 << bit)]
    return "|".join(names) if names else "-"


def fields(value):
    t = value.type.strip_typedefs()
    try:
        return [f.name for f in t.fields() if f.name is not None]
    except TypeError:
        return []


def option(value):
    """The payload of a Rust `Option` (gdb shows it as a union with a `Some` variant), or
    None for `None`; any other value is returned as it is."""
    names = fields(value)
    # gdb resolves the variant from the value: a `None` shows only a `None` field (an empty
    # task table at power-off: returned as it was, its `height` was then looked up in it).
    if "None" in names and "Some" not in names:
        return None
    if "Some" not in names:
        return value
    if "::Some(" not in str(value) and not str(value).startswith("Some"):
        return None
    payload = value["Some"]
    inner_names = fields(payload)
    return payload["__0"] if "__0" in inner_names else payload[inner_names[0]]


def integer(value):
    """The integer inside newtypes and atomics (u64, AtomicU32 { v: UnsafeCell { value } })."""
    while True:
        t = value.type.strip_typedefs()
        if t.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_BOOL, gdb.TYPE_CODE_CHAR, gdb.TYPE_CODE_ENUM):
            return int(value)
        if t.code == gdb.TYPE_CODE_PTR:
            return int(value)
        names = fields(value)
        if not names:
            raise gdb.GdbError("no integer in %s" % t)
        value = value[names[0]]


def pointer(value):
    """The first raw pointer inside `value` (Box, NonNull, Unique, RawVec...)."""
    t = value.type.strip_typedefs()
    if t.code == gdb.TYPE_CODE_PTR:
        return value
    for name in fields(value):
        try:
            found = pointer(value[name])
        except gdb.GdbError:
            continue
        if found is not None:
            return found
    raise gdb.GdbError("no pointer in %s" % t)


def inner(value, *path):
    """Descends wrapper fields: each of `path` is tried at every level of single-field wrappers
    (Mutex.data, UnsafeCell.value, MaybeUninit.value, ManuallyDrop.value, Arc.ptr...)."""
    for name in path:
        seen = 0
        while name not in fields(value):
            names = fields(value)
            t = value.type.strip_typedefs()
            if t.code == gdb.TYPE_CODE_PTR:
                value = value.dereference()
            elif "data" in names:
                value = value["data"]
            elif "value" in names:
                value = value["value"]
            elif "ptr" in names:
                value = value["ptr"]
            elif "pointer" in names:
                value = value["pointer"]
            elif len(names) == 1:
                value = value[names[0]]
            else:
                raise gdb.GdbError("no field %r in %s (fields %s)" % (name, t, names))
            seen += 1
            if seen > 12:
                raise gdb.GdbError("no field %r" % name)
        value = value[name]
    return value


def unwrap_to(value, type_name):
    """Descends wrappers and pointers until the type's name ends with `type_name`."""
    for _ in range(16):
        t = value.type.strip_typedefs()
        if str(t).split("<")[0].endswith(type_name):
            return value
        if "Some" in fields(value):
            value = option(value)
            if value is None:
                raise gdb.GdbError("None where a %s was expected" % type_name)
            continue
        if t.code == gdb.TYPE_CODE_PTR:
            value = value.dereference()
            continue
        names = fields(value)
        for candidate in ("data", "value", "ptr", "pointer"):
            if candidate in names:
                value = value[candidate]
                break
        else:
            if len(names) >= 1:
                value = value[names[0]]
            else:
                break
    raise gdb.GdbError("no %s inside %s" % (type_name, value.type))


def rust_str(value):
    """A String / &str / Arc<str> as Python text."""
    try:
        vec = inner(value, "len")
    except gdb.GdbError:
        return "?"
    try:
        owner = value
        # String { vec: Vec { buf, len } }: the pointer lives next to `len`.
        while "len" not in fields(owner):
            owner = owner[fields(owner)[0]]
        length = integer(owner["len"])
        data = pointer(owner)
        return gdb.selected_inferior().read_memory(int(data), min(length, 64)).tobytes().decode("utf-8", "replace")
    except (gdb.GdbError, gdb.MemoryError):
        return "?"


def btree_items(tree):
    """(key, value) pairs of a std BTreeMap, in order, read from its nodes."""
    node_ref = option(inner(tree, "root"))
    if node_ref is None:
        return []
    height = integer(node_ref["height"])
    node = pointer(node_ref["node"])
    return list(walk_node(node, height))


def walk_node(node_ptr, height):
    leaf = node_ptr.dereference()
    n = integer(leaf["len"])
    keys, vals = leaf["keys"], leaf["vals"]
    edges = None
    if height > 0:
        internal_type = None
        leaf_type = str(leaf.type.strip_typedefs())
        internal_name = leaf_type.replace("LeafNode", "InternalNode", 1)
        try:
            internal_type = gdb.lookup_type(internal_name)
        except gdb.error:
            raise gdb.GdbError("no type %s in the debug info" % internal_name)
        internal = node_ptr.cast(internal_type.pointer()).dereference()
        edges = internal["edges"]
    for i in range(n + 1):
        if edges is not None:
            child = pointer(edges[i])
            for item in walk_node(child, height - 1):
                yield item
        if i < n:
            yield (unwrap_maybe(keys[i]), unwrap_maybe(vals[i]))


def unwrap_maybe(value):
    # MaybeUninit<T> { uninit, value: ManuallyDrop<T> { value: T } }
    for _ in range(3):
        names = fields(value)
        if "value" in names:
            value = value["value"]
        else:
            break
    return value


def symbol(name):
    sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
    if sym is None:
        raise gdb.GdbError("no symbol %s: load the kernel's symbols first (cargo xtask gdb)" % name)
    return sym.value()


def tasks():
    table = symbol("kernel::proc::TABLE")
    tree = inner(table, "data")
    return [(integer(k), unwrap_to(v, "Task")) for k, v in btree_items(tree)]


def task_aspace(pid):
    for tid, task in tasks():
        if tid == pid:
            aspace = task["aspace"]
            try:
                return unwrap_to(aspace, "AddressSpace")
            except gdb.GdbError:
                raise gdb.GdbError("task %d has no address space (a kernel thread, or exited)" % pid)
    raise gdb.GdbError("no task %d (cowlab-ps lists them)" % pid)


def phys_offset():
    mm = unwrap_to(symbol("kernel::memory::MM"), "Mm")
    return int(mm["phys"]["base"])


def read_u64(addr):
    data = gdb.selected_inferior().read_memory(addr, 8).tobytes()
    return int.from_bytes(data, "little")


class PtePrinter:
    def __init__(self, value):
        self.raw = integer(value)

    def to_string(self):
        if self.raw == 0:
            return "Pte(empty)"
        return "Pte(%#x frame=%#x %s)" % (self.raw, self.raw & ADDR_MASK, decode(self.raw, PTE_FLAGS))


class AddrPrinter:
    def __init__(self, value):
        self.value = value

    def to_string(self):
        t = self.value.type.strip_typedefs()
        return "%s(%#x)" % ((t.tag or str(t)).split("::")[-1], integer(self.value))


class FrameMetaPrinter:
    def __init__(self, value):
        self.value = value

    def to_string(self):
        v = self.value
        flags = integer(v["flags"])
        return "FrameMeta(refcount=%d mapcount=%d pincount=%d flags=%s)" % (
            integer(v["refcount"]), integer(v["mapcount"]), integer(v["pincount"]),
            decode(flags, FRAME_FLAGS))


def lookup_printer(value):
    t = value.type.strip_typedefs()
    # The tag, not str(): with no frame selected gdb may speak C and print "struct NAME".
    name = t.tag or t.name or str(t)
    if name.endswith("::Pte") and "pagetable" in name:
        return PtePrinter(value)
    if name in ("cowlab_mm::addr::VirtAddr", "cowlab_mm::addr::PhysAddr"):
        return AddrPrinter(value)
    if name == "cowlab_mm::frame::FrameMeta":
        return FrameMetaPrinter(value)
    return None


class CowlabPs(gdb.Command):
    """cowlab-ps: the kernel's task table (tid, tgid, state, page-table root, name)."""

    def __init__(self):
        super().__init__("cowlab-ps", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        rows = tasks()
        print("%5s %5s %-10s %-18s %s" % ("TID", "TGID", "STATE", "CR3", "NAME"))
        for tid, task in rows:
            state = state_name(str(task["state"]))
            try:
                root = "%#x" % integer(task_aspace_value(task)["root"])
            except gdb.GdbError:
                root = "-"
            print("%5d %5d %-10s %-18s %s" % (tid, integer(task["tgid"]), state[:10], root, rust_str(task["name"])))
        print("%d tasks" % len(rows))


def state_name(text):
    """The variant of a printed `State` ("...State::Blocked{channel: ..}" -> "Blocked"): the
    text after the last "::" is a field's value for a variant with fields."""
    m = re.search(r"State::(\w+)", text)
    return m.group(1) if m else text.split("::")[-1]


def task_aspace_value(task):
    return unwrap_to(task["aspace"], "AddressSpace")


class CowlabVmas(gdb.Command):
    """cowlab-vmas PID: the VMAs of a task (start, end, prot, sharing, flags, backing)."""

    def __init__(self):
        super().__init__("cowlab-vmas", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        pid = int(gdb.parse_and_eval(arg))
        aspace = task_aspace(pid)
        items = btree_items(inner(aspace["vmas"], "map"))
        for _, vma in items:
            vma = unwrap_to(vma, "Vma")
            prot = integer(vma["prot"])
            perms = "".join(c if prot & bit else "-" for bit, c in ((1, "r"), (2, "w"), (4, "x")))
            print("%#014x-%#014x %s %-7s %-40s %s" % (
                integer(vma["start"]), integer(vma["end"]), perms,
                str(vma["sharing"]).split("::")[-1], decode(integer(vma["flags"]), VMA_FLAGS),
                str(vma["backing"]).split("::")[-1].replace("\n", " ")[:60]))
        print("%d VMAs" % len(items))


class CowlabPte(gdb.Command):
    """cowlab-pte PID ADDR: the four-level walk of ADDR in the task's page tables."""

    def __init__(self):
        super().__init__("cowlab-pte", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if len(args) != 2:
            raise gdb.GdbError("usage: cowlab-pte PID ADDR")
        pid, addr = int(gdb.parse_and_eval(args[0])), int(gdb.parse_and_eval(args[1]))
        table = integer(task_aspace(pid)["root"])
        offset = phys_offset()
        for level, shift in (("PML4", 39), ("PDPT", 30), ("PD", 21), ("PT", 12)):
            index = (addr >> shift) & 0x1FF
            raw = read_u64(offset + table + index * 8)
            print("%-4s[%3d] %s" % (level, index, PtePrinter(gdb.Value(raw)).to_string()))
            if not raw & 1 or (raw & (1 << 7) and level != "PT"):
                return
            table = raw & ADDR_MASK
        frame = raw & ADDR_MASK
        print("frame %#x (PFN %d): %s" % (frame, frame >> 12, frame_meta(frame >> 12)))


def frame_meta(pfn):
    frames = unwrap_to(symbol("kernel::memory::FRAMES"), "FrameTable")
    meta = frames["meta"]
    data = pointer(meta)
    length = integer(meta["length"]) if "length" in fields(meta) else None
    if length is not None and pfn >= length:
        raise gdb.GdbError("PFN %d is past the frame table (%d frames)" % (pfn, length))
    return FrameMetaPrinter((data + pfn).dereference()).to_string()


class CowlabFrame(gdb.Command):
    """cowlab-frame PFN: the frame's metadata."""

    def __init__(self):
        super().__init__("cowlab-frame", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        print(frame_meta(int(gdb.parse_and_eval(arg))))


class CowlabBreak(gdb.Command):
    """cowlab-break NAME: a breakpoint on every instance of the function NAME, generic or not
    (`do_wp_page` matches cowlab_mm::wp::do_wp_page<kernel::vm::KernelArch>)."""

    def __init__(self):
        super().__init__("cowlab-break", gdb.COMMAND_BREAKPOINTS)

    def invoke(self, arg, from_tty):
        name = arg.strip()
        if not name:
            raise gdb.GdbError("usage: cowlab-break NAME")
        listing = gdb.execute("info functions -q ::%s" % name, to_string=True)
        found = []
        for line in listing.splitlines():
            # "51:\tstatic fn cowlab_mm::wp::do_wp_page<...>(...);" or, without line
            # information, "0x...  cowlab_mm::...": the symbol runs up to the argument list.
            text = line.split("\t")[-1].strip()
            for prefix in ("static fn ", "fn "):
                if text.startswith(prefix):
                    text = text[len(prefix):]
                    break
            else:
                if not text.startswith("0x"):
                    continue
                text = text.split(None, 1)[-1]
            symbol = text.split("(")[0].strip()
            if symbol.split("<")[0].split("::")[-1] == name and symbol not in found:
                found.append(symbol)
        if not found:
            raise gdb.GdbError("no function named %s" % name)
        for symbol in found:
            gdb.Breakpoint(symbol, internal=False)
        print("cowlab-break: %d breakpoint(s) on %s" % (len(found), name))


gdb.pretty_printers.append(lookup_printer)
CowlabBreak()
CowlabPs()
CowlabVmas()
CowlabPte()
CowlabFrame()
print("cowlab: commands cowlab-ps, cowlab-vmas PID, cowlab-pte PID ADDR, cowlab-frame PFN, cowlab-break NAME")
