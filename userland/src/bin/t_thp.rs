//! Anonymous transparent huge pages from user space (issue 14): the sysfs controls, a fault in
//! a `MADV_HUGEPAGE` range mapping one 2 MiB PMD (`/proc/self/smaps` `AnonHugePages`,
//! `/proc/self/pagemap` contiguous PFNs), fork and COW of one subpage, a vmsplice reference on
//! a subpage outliving the mapping, partial munmap and `MADV_DONTNEED` splitting the PMD, and
//! (on cowlab) `MemFree` back to its value after the THP goes. On a host without THP (no
//! `/sys/kernel/mm/transparent_hugepage`, or `never`), the THP checks are skipped with the
//! reason; PFN checks need the PFNs pagemap shows root only. Writes to the sysfs controls are
//! made on cowlab only (never on the host's own configuration).
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const HPAGE: usize = 2 << 20;
const NR: usize = HPAGE / PAGE;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
const MADV_DONTNEED: i32 = 4;
const MADV_HUGEPAGE: i32 = 14;
const MADV_NOHUGEPAGE: i32 = 15;
const VMSPLICE: usize = 278;
const PRESENT: u64 = 1 << 63;
const PFN: u64 = (1 << 55) - 1;

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside their own live mappings (or expect the fault).
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside their own live writable mappings.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn pattern(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The number after `key` in `text` (the first occurrence at or after `from`).
fn field(text: &[u8], from: usize, key: &[u8]) -> Option<u64> {
    let at = text[from..].windows(key.len()).position(|w| w == key)? + from + key.len();
    let digits = text[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit());
    let mut v = 0u64;
    let mut any = false;
    for d in digits {
        v = v * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(v)
}

/// `AnonHugePages` (kB) of the VMA starting at `start` in `/proc/self/smaps`.
fn anon_huge_kb(start: usize) -> Option<u64> {
    let mut buf = [0u8; 32 * 1024];
    let n = read_file(c"/proc/self/smaps", &mut buf)?;
    let text = &buf[..n];
    let mut head = [0u8; 17];
    let h = hex(start, &mut head);
    // A VMA line starts at the beginning of a line with "<start>-".
    let mut at = 0;
    loop {
        let pos = text[at..].windows(h.len()).position(|w| w == h)? + at;
        if (pos == 0 || text[pos - 1] == b'\n') && text.get(pos + h.len()) == Some(&b'-') {
            return field(text, pos, b"AnonHugePages:");
        }
        at = pos + 1;
    }
}

fn hex(mut v: usize, out: &mut [u8; 17]) -> &[u8] {
    let mut i = 17;
    loop {
        i -= 1;
        out[i] = b"0123456789abcdef"[v % 16];
        v /= 16;
        if v == 0 {
            break;
        }
    }
    &out[i..]
}

fn pagemap(pm: i32, addr: usize) -> u64 {
    let mut b = [0u8; 8];
    match pread(pm, &mut b, (addr / PAGE * 8) as u64) {
        Ok(8) => u64::from_le_bytes(b),
        _ => 0,
    }
}

fn mem_free_kb() -> Option<u64> {
    let mut buf = [0u8; 2048];
    let n = read_file(c"/proc/meminfo", &mut buf)?;
    field(&buf[..n], 0, b"MemFree:")
}

fn vmsplice(fd: i32, base: usize, len: usize) -> Result<usize, Errno> {
    let iov = [base, len];
    // SAFETY: one iovec; the kernel only reads the memory it names (or fails with EFAULT).
    unsafe { raw(VMSPLICE, [fd as usize, iov.as_ptr() as usize, 1, 0, 0, 0]) }
}

/// A 2 MiB-aligned private anon range of `len` bytes (over-mapped, then trimmed).
fn map_aligned(len: usize) -> usize {
    let raw_start = mmap(0, len + HPAGE, RW, ANON).unwrap_or(0);
    if raw_start == 0 {
        return 0;
    }
    let start = (raw_start + HPAGE - 1) & !(HPAGE - 1);
    if start > raw_start {
        let _ = munmap(raw_start, start - raw_start);
    }
    let tail = raw_start + len + HPAGE - (start + len);
    if tail > 0 {
        let _ = munmap(start + len, tail);
    }
    start
}

fn main() -> i32 {
    let mut t = Tester::new("t_thp");
    let cowlab = on_cowlab();
    let mut text = [0u8; 128];
    let enabled = read_file(c"/sys/kernel/mm/transparent_hugepage/enabled", &mut text);
    let Some(n) = enabled else {
        println!("t_thp: skip: no /sys/kernel/mm/transparent_hugepage (kernel without THP)");
        t.check("cowlab has the THP controls", !cowlab);
        return t.finish();
    };
    let thp_on = !contains(&text[..n], b"[never]");
    if cowlab {
        t.eq(
            "enabled reads always [madvise] never",
            &text[..n],
            b"always [madvise] never\n".as_slice(),
        );
        let mut s = [0u8; 64];
        let k = read_file(
            c"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
            &mut s,
        );
        t.eq(
            "hpage_pmd_size",
            k.map(|k| &s[..k]),
            Some(b"2097152\n".as_slice()),
        );
        let k = read_file(c"/sys/kernel/mm/transparent_hugepage/defrag", &mut s);
        t.check(
            "defrag readable",
            k.is_some_and(|k| contains(&s[..k], b"[madvise]")),
        );
        let fd = open(c"/sys/kernel/mm/transparent_hugepage/enabled", O_WRONLY).unwrap_or(-1);
        t.eq(
            "enabled: a bad word is EINVAL",
            write(fd, b"sometimes"),
            Err(Errno(errno::EINVAL)),
        );
        t.eq("enabled: never", write(fd, b"never\n"), Ok(6));
        let k = read_file(c"/sys/kernel/mm/transparent_hugepage/enabled", &mut s);
        t.eq(
            "enabled now never",
            k.map(|k| &s[..k]),
            Some(b"always madvise [never]\n".as_slice()),
        );
        t.eq("enabled: back to madvise", write(fd, b"madvise"), Ok(7));
        let _ = close(fd);
        t.eq(
            "hpage_pmd_size is read-only (EACCES)",
            open(
                c"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
                O_WRONLY,
            ),
            Err(Errno(errno::EACCES)),
        );
    }
    if !thp_on {
        println!("t_thp: skip: THP disabled on this host (enabled = never)");
        return t.finish();
    }
    // The stack pages the checks below use (the smaps buffer, the pipe read) are touched now,
    // so that MemFree can be compared at the end.
    let mut got = [0u8; PAGE];
    let _ = anon_huge_kb(0);
    let free0 = mem_free_kb();

    // A fault in a MADV_HUGEPAGE range maps one PMD.
    let a = map_aligned(HPAGE);
    t.check("mmap 2 MiB aligned", a != 0);
    if a == 0 {
        return t.finish();
    }
    t.eq("MADV_HUGEPAGE", madvise(a, HPAGE, MADV_HUGEPAGE), Ok(0));
    let flt0 = minflt(0).unwrap_or(0);
    for i in 0..NR {
        poke(a + i * PAGE, pattern(i));
    }
    let faults = minflt(0).unwrap_or(0) - flt0;
    let huge = anon_huge_kb(a);
    if !cowlab && huge == Some(0) {
        // Linux may find no free 2 MiB block (fragmentation, a memory cgroup limit): it then
        // maps 4 KiB pages, which is correct behaviour, but leaves nothing to test here.
        println!("t_thp: skip: the host kernel gave this range no THP (no free 2 MiB block?)");
        let _ = munmap(a, HPAGE);
        return t.finish();
    }
    t.check_why(
        "smaps AnonHugePages 2048 kB",
        huge == Some(2048),
        format_args!("{huge:?}"),
    );
    if cowlab {
        t.check_why("one fault for 2 MiB", faults == 1, faults);
    }
    let pm = open(c"/proc/self/pagemap", O_RDONLY).unwrap_or(-1);
    let first = pagemap(pm, a);
    t.check("pagemap: present", first & PRESENT != 0);
    let pfn0 = first & PFN;
    if pfn0 == 0 {
        println!("t_thp: skip: pagemap shows no PFNs here (not CAP_SYS_ADMIN)");
    } else {
        t.check_why(
            "the PFN is 2 MiB aligned",
            pfn0.is_multiple_of(NR as u64),
            format_args!("{pfn0:#x}"),
        );
        let contiguous = (0..NR).all(|i| pagemap(pm, a + i * PAGE) & PFN == pfn0 + i as u64);
        t.check("pagemap: 512 contiguous PFNs", contiguous);
    }

    // fork + COW of one subpage: each side keeps its own data; the parent keeps its THP.
    let status = in_child(|| {
        if (0..NR).any(|i| peek(a + i * PAGE) != pattern(i)) {
            return 2;
        }
        poke(a + 5 * PAGE, 0xee);
        if peek(a + 5 * PAGE) != 0xee || peek(a + 6 * PAGE) != pattern(6) {
            return 3;
        }
        0
    });
    t.check_why(
        "child reads the THP and writes one subpage",
        wifexited(status) && wexitstatus(status) == 0,
        status,
    );
    t.eq("parent keeps its subpage", peek(a + 5 * PAGE), pattern(5));
    poke(a + 7 * PAGE, 0x77);
    t.eq(
        "parent writes after the child exited",
        peek(a + 7 * PAGE),
        0x77,
    );
    let huge = anon_huge_kb(a);
    t.check_why(
        "the parent's PMD survived fork+COW",
        huge == Some(2048),
        format_args!("{huge:?}"),
    );
    if pfn0 != 0 {
        t.eq(
            "the parent's subpage was reused, not copied",
            pagemap(pm, a + 7 * PAGE) & PFN,
            pfn0 + 7,
        );
    }

    // GUP on a subpage (vmsplice references it), then the whole THP is unmapped: the pipe's
    // reference keeps the data until it is read.
    let p = pipe().unwrap_or([-1, -1]);
    t.eq(
        "vmsplice one subpage of the THP",
        vmsplice(p[1], a + 9 * PAGE, PAGE),
        Ok(PAGE),
    );

    // Partial munmap and MADV_DONTNEED split the PMD; the rest keeps its data.
    t.eq("munmap one subpage", munmap(a + 100 * PAGE, PAGE), Ok(0));
    let status = in_child(|| i32::from(peek(a + 100 * PAGE)));
    t.check_why(
        "the unmapped subpage is SIGSEGV",
        wifsignaled(status) && wtermsig(status) == 11,
        status,
    );
    t.eq(
        "its neighbour keeps its data",
        peek(a + 101 * PAGE),
        pattern(101),
    );
    let huge = anon_huge_kb(a);
    t.check_why(
        "no PMD left after the split",
        huge == Some(0),
        format_args!("{huge:?}"),
    );
    t.eq(
        "MADV_DONTNEED one subpage",
        madvise(a + 200 * PAGE, PAGE, MADV_DONTNEED),
        Ok(0),
    );
    t.eq("it reads zero", peek(a + 200 * PAGE), 0);
    t.eq(
        "the next keeps its data",
        peek(a + 201 * PAGE),
        pattern(201),
    );
    if pfn0 != 0 {
        t.eq(
            "a split subpage keeps its frame",
            pagemap(pm, a + 300 * PAGE) & PFN,
            pfn0 + 300,
        );
    }
    t.eq("munmap the rest", munmap(a, HPAGE), Ok(0));
    let n = read(p[0], &mut got).unwrap_or(0);
    t.check(
        "the vmspliced subpage outlived its mapping",
        n == PAGE && got.iter().all(|&b| b == pattern(9) || b == 0) && got[0] == pattern(9),
    );
    let _ = close(p[0]);
    let _ = close(p[1]);
    let _ = close(pm);

    // MADV_NOHUGEPAGE: small pages.
    let b = map_aligned(HPAGE);
    t.eq("MADV_NOHUGEPAGE", madvise(b, HPAGE, MADV_NOHUGEPAGE), Ok(0));
    poke(b, 1);
    t.eq("no THP under MADV_NOHUGEPAGE", anon_huge_kb(b), Some(0));
    t.eq("munmap it", munmap(b, HPAGE), Ok(0));

    if cowlab {
        let free1 = mem_free_kb();
        t.check_why(
            "MemFree back to its value before the THPs",
            free0.is_some() && free0 == free1,
            format_args!("{free0:?} -> {free1:?}"),
        );
    }
    t.finish()
}
