//! Issue 14's second stage from user space: the huge zero page (one shared 2 MiB zero folio
//! for every read-faulted `MADV_HUGEPAGE` range, seen through pagemap), `MADV_COLLAPSE` and its
//! errnos (measured on Linux 6.18), and the folio split of a partly unmapped THP (on cowlab:
//! `MemFree` grows by the unmapped half once `2` is written to `/proc/sys/vm/drop_caches`,
//! which runs the deferred split as Linux's `drop_slab` runs its shrinker). On a host without
//! THP, or without `MADV_COLLAPSE` (before Linux 6.1), those parts are skipped with the
//! reason; PFN comparisons need the PFNs pagemap shows root only; `drop_caches` is written on
//! cowlab only.
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
const MADV_COLLAPSE: i32 = 25;
const VMSPLICE: usize = 278;
const PRESENT: u64 = 1 << 63;
const PFN: u64 = (1 << 55) - 1;

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside their own live mappings.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside their own live writable mappings.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn pattern(i: usize) -> u8 {
    (i * 13 + 5) as u8
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The number after `key` in `text`, at or after `from`.
fn field(text: &[u8], from: usize, key: &[u8]) -> Option<u64> {
    let at = text[from..].windows(key.len()).position(|w| w == key)? + from + key.len();
    let mut v = 0u64;
    let mut any = false;
    for d in text[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
    {
        v = v * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(v)
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

/// `AnonHugePages` (kB) of the VMA starting at `start`.
fn anon_huge_kb(start: usize) -> Option<u64> {
    let mut buf = [0u8; 32 * 1024];
    let n = read_file(c"/proc/self/smaps", &mut buf)?;
    let text = &buf[..n];
    let mut head = [0u8; 17];
    let h = hex(start, &mut head);
    let mut at = 0;
    loop {
        let pos = text[at..].windows(h.len()).position(|w| w == h)? + at;
        if (pos == 0 || text[pos - 1] == b'\n') && text.get(pos + h.len()) == Some(&b'-') {
            return field(text, pos, b"AnonHugePages:");
        }
        at = pos + 1;
    }
}

fn pagemap(addr: usize) -> u64 {
    let Ok(fd) = open(c"/proc/self/pagemap", O_RDONLY) else {
        return 0;
    };
    let mut b = [0u8; 8];
    let r = pread(fd, &mut b, (addr / PAGE * 8) as u64);
    let _ = close(fd);
    match r {
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
    // SAFETY: one iovec; the kernel only takes references to the memory it names.
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

/// `len` bytes of small pages (`MADV_NOHUGEPAGE` while they are written, subpage `i` holding
/// `pattern(i)`), then `MADV_HUGEPAGE`.
fn small_pages(len: usize) -> usize {
    let a = map_aligned(len);
    if a == 0 {
        return 0;
    }
    let _ = madvise(a, len, MADV_NOHUGEPAGE);
    for i in 0..len / PAGE {
        poke(a + i * PAGE, pattern(i));
    }
    let _ = madvise(a, len, MADV_HUGEPAGE);
    a
}

fn main() -> i32 {
    let mut t = Tester::new("t_thp2");
    let cowlab = on_cowlab();
    let mut text = [0u8; 128];
    let Some(n) = read_file(c"/sys/kernel/mm/transparent_hugepage/enabled", &mut text) else {
        println!("t_thp2: skip: no /sys/kernel/mm/transparent_hugepage (kernel without THP)");
        t.check("cowlab has THP", !cowlab);
        return t.finish();
    };
    if contains(&text[..n], b"[never]") {
        println!("t_thp2: skip: THP disabled on this host (enabled = never)");
        t.check("cowlab's default is not never", !cowlab);
        return t.finish();
    }
    let madvise_mode = contains(&text[..n], b"[madvise]");
    // The stack pages the checks use are touched before the MemFree baseline.
    let _ = anon_huge_kb(0);
    let free0 = mem_free_kb();
    huge_zero_page(&mut t, cowlab);
    collapse(&mut t, cowlab, madvise_mode);
    folio_split(&mut t, cowlab);
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

/// Two read-faulted `MADV_HUGEPAGE` ranges map the same 2 MiB zero folio.
fn huge_zero_page(t: &mut Tester, cowlab: bool) {
    let mut b = [0u8; 8];
    let on = read_file(c"/sys/kernel/mm/transparent_hugepage/use_zero_page", &mut b)
        .is_some_and(|n| n > 0 && b[0] == b'1');
    if !on {
        println!("t_thp2: skip: huge zero page off (use_zero_page = 0)");
        t.check("cowlab's use_zero_page defaults to 1", !cowlab);
        return;
    }
    let a = map_aligned(HPAGE);
    let c = map_aligned(HPAGE);
    let ok = madvise(a, HPAGE, MADV_HUGEPAGE).is_ok() && madvise(c, HPAGE, MADV_HUGEPAGE).is_ok();
    t.check("two MADV_HUGEPAGE ranges", ok && a != 0 && c != 0);
    t.eq("a read of one reads zero", peek(a + 3 * PAGE), 0);
    t.eq("and of the other", peek(c + 400 * PAGE), 0);
    let (pa, pc) = (pagemap(a + 511 * PAGE), pagemap(c + 511 * PAGE));
    if pa & PRESENT == 0 {
        println!("t_thp2: skip: the host gave this range no huge zero page");
        t.check("cowlab maps the huge zero page", !cowlab);
    } else {
        t.check("one read populated the whole 2 MiB", pc & PRESENT != 0);
        t.eq(
            "no AnonHugePages for the zero page",
            anon_huge_kb(a),
            Some(0),
        );
        if pa & PFN == 0 {
            println!("t_thp2: skip: pagemap shows no PFNs here (not CAP_SYS_ADMIN)");
        } else {
            let head = pagemap(a) & PFN;
            t.check_why(
                "its PFNs: 2 MiB aligned and contiguous",
                head.is_multiple_of(NR as u64) && pa & PFN == head + 511,
                format_args!("{head:#x}"),
            );
            t.eq(
                "both ranges map the same zero folio",
                pagemap(c) & PFN,
                head,
            );
        }
        // fork shares it; a write in the child leaves the parent's zeros.
        let status = in_child(|| {
            poke(a + 5 * PAGE, 0x5a);
            i32::from(peek(a + 5 * PAGE) != 0x5a || peek(a + 6 * PAGE) != 0)
        });
        t.check_why(
            "a child writes its shared huge zero page",
            wifexited(status) && wexitstatus(status) == 0,
            status,
        );
        t.eq("the parent still reads zero", peek(a + 5 * PAGE), 0);
        poke(a + 7 * PAGE, 7);
        t.eq("a write breaks it", peek(a + 7 * PAGE), 7);
        t.eq("the other range keeps its zeros", peek(c + 7 * PAGE), 0);
        if cowlab {
            // cowlab gives the writer a THP (Linux 6.x splits and copies 4 KiB).
            t.eq("the writer got a THP", anon_huge_kb(a), Some(2048));
            t.check(
                "the writer's PFN left the zero folio",
                pagemap(a) & PFN != pagemap(c) & PFN,
            );
        }
    }
    let _ = munmap(a, HPAGE);
    let _ = munmap(c, HPAGE);
}

/// `MADV_COLLAPSE` of small pages, and its errnos as Linux 6.18 returns them.
fn collapse(t: &mut Tester, cowlab: bool, madvise_mode: bool) {
    let a = small_pages(2 * HPAGE);
    t.check("4 MiB of small pages", a != 0 && anon_huge_kb(a) == Some(0));
    match madvise(a, HPAGE, MADV_COLLAPSE) {
        Err(Errno(errno::EINVAL)) if !cowlab => {
            println!("t_thp2: skip: no MADV_COLLAPSE on this host (before Linux 6.1)");
            let _ = munmap(a, 2 * HPAGE);
            return;
        }
        Err(Errno(errno::ENOMEM)) if !cowlab => {
            println!("t_thp2: skip: the host found no free 2 MiB block for MADV_COLLAPSE");
            let _ = munmap(a, 2 * HPAGE);
            return;
        }
        r => t.eq("MADV_COLLAPSE of 512 small pages", r, Ok(0)),
    }
    t.eq("one THP now", anon_huge_kb(a), Some(2048));
    t.check(
        "with their contents",
        (0..NR).all(|i| peek(a + i * PAGE) == pattern(i)),
    );
    t.eq(
        "again: already PMD-mapped",
        madvise(a, HPAGE, MADV_COLLAPSE),
        Ok(0),
    );
    t.eq(
        "unaligned start: EINVAL",
        madvise(a + 1, HPAGE, MADV_COLLAPSE),
        Err(Errno(errno::EINVAL)),
    );
    t.eq("length 0", madvise(a, 0, MADV_COLLAPSE), Ok(0));
    t.eq(
        "no whole 2 MiB in the range: nothing, 0",
        madvise(a + HPAGE, HPAGE / 2, MADV_COLLAPSE),
        Ok(0),
    );
    t.eq("the second 2 MiB untouched", anon_huge_kb(a), Some(2048));
    // A page held by a pipe (vmsplice's reference): EAGAIN.
    let p = pipe().unwrap_or([-1, -1]);
    t.eq(
        "vmsplice one page",
        vmsplice(p[1], a + HPAGE + 3 * PAGE, PAGE),
        Ok(PAGE),
    );
    t.eq(
        "a referenced page: EAGAIN",
        madvise(a + HPAGE, HPAGE, MADV_COLLAPSE),
        Err(Errno(11)), // EAGAIN,
    );
    // vmsplice of more than the pipe holds returns a short count, as Linux's
    // `vmsplice_to_pipe` (it waits for room only before the first page).
    let q = pipe().unwrap_or([-1, -1]);
    t.eq(
        "vmsplice of 2 MiB into an empty pipe: 64 KiB",
        vmsplice(q[1], a, HPAGE),
        Ok(16 * PAGE),
    );
    let _ = close(q[0]);
    let _ = close(q[1]);
    let _ = close(p[0]);
    let _ = close(p[1]);
    // Fork-shared pages are copied: the child, alive meanwhile, keeps its own.
    let go = pipe().unwrap_or([-1, -1]);
    let child = match fork() {
        Ok(0) => {
            let mut b = [0u8; 1];
            let _ = read(go[0], &mut b);
            exit_now(i32::from(peek(a + HPAGE + 9 * PAGE) != pattern(NR + 9)))
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    t.eq(
        "fork-shared pages collapse",
        madvise(a + HPAGE, HPAGE, MADV_COLLAPSE),
        Ok(0),
    );
    poke(a + HPAGE + 9 * PAGE, 0xee);
    let _ = write(go[1], b"g");
    let status = waitpid(child, 0).map(|(_, s)| s).unwrap_or(-1);
    t.check_why(
        "the child keeps its own data",
        wifexited(status) && wexitstatus(status) == 0,
        status,
    );
    let _ = close(go[0]);
    let _ = close(go[1]);
    t.eq("4 MiB of THPs", anon_huge_kb(a), Some(4096));
    t.eq(
        "MADV_NOHUGEPAGE range: EINVAL",
        madvise(a + HPAGE, HPAGE, MADV_NOHUGEPAGE).and(madvise(a + HPAGE, HPAGE, MADV_COLLAPSE)),
        Err(Errno(errno::EINVAL)),
    );
    let _ = munmap(a, 2 * HPAGE);
    // A 2 MiB split across two VMAs (one page R/O): EINVAL.
    let b = small_pages(HPAGE);
    let _ = mprotect(b + 100 * PAGE, PAGE, PROT_READ);
    t.eq(
        "a 2 MiB across two VMAs: EINVAL",
        madvise(b, HPAGE, MADV_COLLAPSE),
        Err(Errno(errno::EINVAL)),
    );
    let _ = munmap(b, HPAGE);
    // No page table, or only zero pages: EINVAL.
    let c = map_aligned(HPAGE);
    let _ = madvise(c, HPAGE, MADV_HUGEPAGE);
    t.eq(
        "nothing mapped: EINVAL",
        madvise(c, HPAGE, MADV_COLLAPSE),
        Err(Errno(errno::EINVAL)),
    );
    let _ = madvise(c, HPAGE, MADV_NOHUGEPAGE);
    for i in 0..NR {
        let _ = peek(c + i * PAGE);
    }
    let _ = madvise(c, HPAGE, MADV_HUGEPAGE);
    t.eq(
        "only the zero page: EINVAL",
        madvise(c, HPAGE, MADV_COLLAPSE),
        Err(Errno(errno::EINVAL)),
    );
    let _ = munmap(c, HPAGE);
    // MADV_COLLAPSE does not depend on the sysfs mode: a range without MADV_HUGEPAGE
    // collapses under enabled=madvise too (Linux's documented behaviour).
    if madvise_mode {
        let d = map_aligned(HPAGE);
        for i in 0..NR {
            poke(d + i * PAGE, 1);
        }
        t.eq(
            "no MADV_HUGEPAGE under enabled=madvise: collapses anyway",
            madvise(d, HPAGE, MADV_COLLAPSE),
            Ok(0),
        );
        t.eq("a THP", anon_huge_kb(d), Some(2048));
        let _ = munmap(d, HPAGE);
    }
    // A hole: the mapped 2 MiB is collapsed, then ENOMEM.
    let e = small_pages(2 * HPAGE);
    let _ = munmap(e + HPAGE, HPAGE);
    t.eq(
        "a hole: ENOMEM",
        madvise(e, 2 * HPAGE, MADV_COLLAPSE),
        Err(Errno(errno::ENOMEM)),
    );
    t.eq("the mapped part collapsed", anon_huge_kb(e), Some(2048));
    let _ = munmap(e, HPAGE);
}

/// A PTE-mapped THP, half unmapped: split by the deferred split (drop_caches 2 on cowlab).
fn folio_split(t: &mut Tester, cowlab: bool) {
    let a = map_aligned(HPAGE);
    let _ = madvise(a, HPAGE, MADV_HUGEPAGE);
    for i in 0..NR {
        poke(a + i * PAGE, pattern(i));
    }
    if anon_huge_kb(a) != Some(2048) {
        println!("t_thp2: skip: the host gave this range no THP");
        t.check("cowlab gives a THP", !cowlab);
        let _ = munmap(a, HPAGE);
        return;
    }
    // PTE-map it (one subpage R/O for a moment), then unmap half.
    let _ = mprotect(a + PAGE, PAGE, PROT_READ);
    let _ = mprotect(a + PAGE, PAGE, RW);
    t.eq("PTE-mapped", anon_huge_kb(a), Some(0));
    let before = mem_free_kb();
    t.eq("munmap half", munmap(a + HPAGE / 2, HPAGE / 2), Ok(0));
    t.eq(
        "MADV_DONTNEED a page of the rest",
        madvise(a + 10 * PAGE, PAGE, MADV_DONTNEED),
        Ok(0),
    );
    if cowlab {
        let queued = mem_free_kb();
        t.check_why(
            "nothing freed yet: the folio is whole until the split",
            queued == before,
            format_args!("{before:?} -> {queued:?}"),
        );
        let fd = open(c"/proc/sys/vm/drop_caches", O_WRONLY).unwrap_or(-1);
        t.eq("drop_caches 2 (the shrinkers)", write(fd, b"2"), Ok(1));
        let _ = close(fd);
        let after = mem_free_kb();
        t.check_why(
            "the split freed the unmapped 1 MiB + 4 KiB",
            before.zip(after).is_some_and(|(b, a)| a == b + 1024 + 4),
            format_args!("{before:?} -> {after:?}"),
        );
    }
    t.check(
        "the mapped half keeps its data",
        (0..NR / 2).all(|i| peek(a + i * PAGE) == if i == 10 { 0 } else { pattern(i) }),
    );
    let _ = munmap(a, HPAGE / 2);
}
