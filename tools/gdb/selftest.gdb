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
