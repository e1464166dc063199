# Run by the harness tier (`cargo xtask gdb --batch tools/gdb/selftest.gdb`): the helpers load,
# and at init's first system call they find init in the task table, its VMAs, the PTE of its
# first text page and that page's frame metadata.
set python print-stack full
hbreak kernel::syscall::dispatch
continue
delete
cowlab-ps
cowlab-vmas 1
cowlab-pte 1 0x400000
cowlab-break do_wp_page
# The pretty-printers, on values built from known bits.
python
import struct
for name, raw in (("cowlab_mm::addr::VirtAddr", 0x400000), ("cowlab_mm::pagetable::entry::Pte", 0x8000000006670265)):
    print("printer: " + gdb.Value(struct.pack("<Q", raw), gdb.lookup_type(name)).format_string())
meta = gdb.Value(struct.pack("<IIII", 2, 1, 1, 3), gdb.lookup_type("cowlab_mm::frame::FrameMeta"))
print("printer: " + meta.format_string())
# An empty map, whose root is `None` (the power-off's empty task table in a hung guest's dump):
# no aio context exists at init's first system call.
print("empty table: %d items" % len(btree_items(inner(symbol("kernel::fs::aio::CONTEXTS"), "data"))))
end
