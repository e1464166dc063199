//! hugetlb from user space (issue 14): the pool's sysfs files and `/proc/sys/vm/nr_hugepages`
//! (growing, shrinking, in-use pages turned surplus, parse errors), the `/proc/meminfo`
//! `HugePages_*`/`Hugepagesize`/`Hugetlb` lines, `MAP_HUGETLB` and `MFD_HUGETLB` errnos
//! (sizes, alignments, reservations at mmap, `SIGBUS` without one), COW of a whole huge page
//! on fork, long-term pins slow and fast (gup_test, where the kernel has it) outliving their
//! mapping, and the pool and `MemFree` back at the end. The program sizes the pool itself
//! (root); where it cannot (not root, a read-only `/proc/sys`, no free 2 MiB memory on the
//! host) it skips with the reason, which on cowlab is a failure.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const HPAGE: usize = 2 << 20;
const RW: u32 = PROT_READ | PROT_WRITE;
const MAP_HUGETLB: u32 = 0x4_0000;
const MAP_NORESERVE: u32 = 0x4000;
const HUGE_2MB: u32 = 21 << 26;
const HUGE_1GB: u32 = 30 << 26;
const HUGE_64KB: u32 = 16 << 26;
const MFD_HUGETLB: u32 = 4;
const HUGE_ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
const MADV_DONTNEED: i32 = 4;
const MREMAP_MAYMOVE: u32 = 1;
/// Pages the pool gets for the test.
const POOL: u64 = 4;

const ENODEV: i32 = 19;
const ENOSPC: i32 = 28;

const SYSFS: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/";
/// The 1 GiB pool (huge3): present where the CPU has 1 GiB pages.
const SYSFS_1G: &str = "/sys/kernel/mm/hugepages/hugepages-1048576kB/";
const GPAGE: usize = 1 << 30;

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside their own live mappings (or expect the fault).
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside their own live writable mappings.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn raw_mmap(
    addr: usize,
    len: usize,
    prot: u32,
    flags: u32,
    fd: i32,
    off: u64,
) -> Result<usize, Errno> {
    // SAFETY: mmap only creates mappings; the caller uses them as its own memory.
    unsafe {
        raw(
            9,
            [
                addr,
                len,
                prot as usize,
                flags as usize,
                fd as usize,
                off as usize,
            ],
        )
    }
}

fn memfd(flags: u32) -> Result<i32, Errno> {
    // SAFETY: the name is a NUL-terminated string alive for the call.
    unsafe {
        raw(
            319,
            [c"hugetlb".as_ptr() as usize, flags as usize, 0, 0, 0, 0],
        )
    }
    .map(|fd| fd as i32)
}

/// A path as a NUL-terminated buffer.
fn path(dir: &str, name: &str, buf: &mut [u8; 128]) -> usize {
    let n = dir.len() + name.len();
    buf[..dir.len()].copy_from_slice(dir.as_bytes());
    buf[dir.len()..n].copy_from_slice(name.as_bytes());
    buf[n] = 0;
    n
}

/// The number in a small file (`None` if it cannot be read or is not one number).
fn read_num(dir: &str, name: &str) -> Option<u64> {
    let mut p = [0u8; 128];
    let n = path(dir, name, &mut p);
    let cpath = core::ffi::CStr::from_bytes_with_nul(&p[..=n]).ok()?;
    let mut buf = [0u8; 64];
    let k = read_file(cpath, &mut buf)?;
    core::str::from_utf8(&buf[..k]).ok()?.trim().parse().ok()
}

/// Writes `text` to a small file: the write's result.
fn write_str(dir: &str, name: &str, text: &[u8]) -> Result<usize, Errno> {
    let mut p = [0u8; 128];
    let n = path(dir, name, &mut p);
    let cpath = core::ffi::CStr::from_bytes_with_nul(&p[..=n]).map_err(|_| Errno(errno::EINVAL))?;
    let fd = open(cpath, O_WRONLY)?;
    let r = write(fd, text);
    let _ = close(fd);
    r
}

fn set_pool(n: u64) -> Result<usize, Errno> {
    let mut buf = [0u8; 24];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    write_str("/proc/sys/vm/", "nr_hugepages", &buf[i..])
}

/// `/proc/meminfo`'s value for `key` (the number after it).
fn meminfo(key: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(c"/proc/meminfo", &mut buf)?;
    let text = &buf[..n];
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let mut digits = text[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .peekable();
    digits.peek()?;
    Some(digits.fold(0, |v, d| v * 10 + u64::from(d - b'0')))
}

/// The pool's four counts from sysfs, and the same from `/proc/meminfo`.
fn pool() -> [Option<u64>; 4] {
    [
        read_num(SYSFS, "nr_hugepages"),
        read_num(SYSFS, "free_hugepages"),
        read_num(SYSFS, "resv_hugepages"),
        read_num(SYSFS, "surplus_hugepages"),
    ]
}

/// Reservations held by no mapping of this program when it started (0 on cowlab; on a host,
/// another user's, or one Linux leaked: 6.18 loses the promise of the unmoved part of a private
/// hugetlb mapping after a partial mremap and never gives it back). Such a promise holds a
/// free page: [`free_pages`] and [`resv_pages`] leave it out, as if the pool were that much
/// smaller.
static BASE_RESV: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn base_resv() -> u64 {
    BASE_RESV.load(core::sync::atomic::Ordering::Relaxed)
}

/// Free pages not promised to anyone outside this program (`HugePages_Free` less
/// [`BASE_RESV`]).
fn free_pages() -> u64 {
    meminfo(b"HugePages_Free:").map_or(u64::MAX, |f| f.saturating_sub(base_resv()))
}

/// This program's promises (`HugePages_Rsvd` less [`BASE_RESV`]).
fn resv_pages() -> u64 {
    meminfo(b"HugePages_Rsvd:").map_or(u64::MAX, |r| r.saturating_sub(base_resv()))
}

fn main() -> i32 {
    let mut t = Tester::new("t_hugetlb");
    let cowlab = on_cowlab();
    // `t_hugetlb 1G`: only the 1 GiB checks (the boot with 1 GiB pages reserved, where the
    // 2 MiB checks of the default boot would only repeat themselves at a 4 GiB guest's cost).
    if cowlab_userland::args::args()
        .skip(1)
        .any(|a| a.to_bytes() == b"1G")
    {
        let _lock = lock_pool();
        prefault_stack();
        let mem_free0 = meminfo(b"MemFree:");
        let free = read_num(SYSFS_1G, "free_hugepages").unwrap_or(0);
        t.check(
            "cowlab booted with two free 1 GiB pages",
            !cowlab || free >= 2,
        );
        gigantic(&mut t);
        if cowlab {
            t.eq("MemFree back to its value", meminfo(b"MemFree:"), mem_free0);
        }
        return t.finish();
    }
    // Held to the end (released by exit): see `lock_pool`.
    let _lock = lock_pool();
    let Some(old_nr) = read_num(SYSFS, "nr_hugepages") else {
        println!("t_hugetlb: skip: no {SYSFS} (kernel without hugetlb)");
        t.check("cowlab has the hugetlb pool", !cowlab);
        return t.finish();
    };
    // The stack the checks below use is touched first, so that MemFree compares at the end.
    prefault_stack();
    let mem_free0 = meminfo(b"MemFree:");
    t.eq(
        "/proc/sys/vm/nr_hugepages agrees with sysfs",
        read_num("/proc/sys/vm/", "nr_hugepages"),
        Some(old_nr),
    );
    t.eq(
        "Hugepagesize: 2048 kB",
        meminfo(b"Hugepagesize:"),
        Some(2048),
    );
    t.eq(
        "free_hugepages is read-only (EACCES)",
        write_str(SYSFS, "free_hugepages", b"1"),
        Err(Errno(errno::EACCES)),
    );
    let base_resv = resv_pages();
    BASE_RESV.store(base_resv, core::sync::atomic::Ordering::Relaxed);
    let base_free = meminfo(b"HugePages_Free:").unwrap_or(u64::MAX);
    match set_pool(old_nr + POOL) {
        Ok(_) => {}
        Err(e) => {
            println!("t_hugetlb: skip: cannot write /proc/sys/vm/nr_hugepages ({e:?}; not root?)");
            t.check("cowlab lets root size the pool", !cowlab);
            return t.finish();
        }
    }
    if meminfo(b"HugePages_Free:").unwrap_or(0) < base_free + POOL {
        println!("t_hugetlb: skip: the host found no {POOL} free 2 MiB pages for the pool");
        t.check("cowlab grows the pool", !cowlab);
        let _ = set_pool(old_nr);
        return t.finish();
    }
    let [nr, free, resv, surp] = pool();
    t.eq("nr_hugepages grew by 4", nr, Some(old_nr + POOL));
    t.eq(
        "HugePages_Total",
        meminfo(b"HugePages_Total:"),
        nr.map(|n| n + surp.unwrap_or(0)),
    );
    t.eq(
        "HugePages_Free = free_hugepages",
        meminfo(b"HugePages_Free:"),
        free,
    );
    t.eq(
        "HugePages_Rsvd = resv_hugepages",
        meminfo(b"HugePages_Rsvd:"),
        resv,
    );
    t.eq(
        "HugePages_Surp = surplus_hugepages",
        meminfo(b"HugePages_Surp:"),
        surp,
    );
    if cowlab {
        // Linux's `Hugetlb:` sums every size: the 1 GiB pool too.
        let gig_kb = read_num(SYSFS_1G, "nr_hugepages").unwrap_or(0) * (GPAGE as u64 / 1024);
        t.eq(
            "Hugetlb: 8192 kB (+ the 1 GiB pool)",
            meminfo(b"Hugetlb:"),
            Some((old_nr + POOL) * 2048 + gig_kb),
        );
        t.eq(
            "nr_hugepages: a word is EINVAL",
            set_pool_text(b"abc"),
            Err(Errno(errno::EINVAL)),
        );
        t.eq(
            "nr_hugepages: -1 is EINVAL",
            set_pool_text(b"-1"),
            Err(Errno(errno::EINVAL)),
        );
        t.eq(
            "sysfs nr_hugepages: \"\" is EINVAL",
            write_str(SYSFS, "nr_hugepages", b""),
            Err(Errno(errno::EINVAL)),
        );
    }
    let free0 = free_pages();

    mmap_errnos(&mut t, free0);
    memfd_files(&mut t, free0);
    cow_on_fork(&mut t, free0);
    smaps_hugetlb(&mut t, free0);
    mremap_huge(&mut t, free0);
    vmsplice_huge(&mut t, free0);
    pins(&mut t, free0);
    gigantic(&mut t);

    // Shrinking the pool under a page in use: it becomes surplus, and goes back when freed.
    let a = raw_mmap(0, HPAGE, RW, HUGE_ANON, -1, 0).unwrap_or(0);
    if a != 0 {
        poke(a, 1);
        let _ = set_pool(old_nr);
        let [nr, _, _, surp] = pool();
        t.eq(
            "shrunk below use: /proc/sys/vm/nr_hugepages is the persistent size",
            read_num("/proc/sys/vm/", "nr_hugepages"),
            Some(old_nr),
        );
        t.eq(
            "sysfs nr_hugepages counts the surplus page",
            nr,
            Some(old_nr + 1),
        );
        t.eq("the page in use is surplus", surp, Some(1));
        t.eq("it keeps its data", peek(a), 1);
        t.eq("munmap it", munmap(a, HPAGE), Ok(0));
        t.eq(
            "surplus gone with it",
            read_num(SYSFS, "surplus_hugepages"),
            Some(0),
        );
    } else {
        t.check("mmap for the shrink", false);
    }
    let _ = set_pool(old_nr);
    let [nr, free, resv, surp] = pool();
    t.eq("pool back to its size", nr, Some(old_nr));
    t.eq("free back", free, Some(base_free));
    t.eq("no reservation left", resv, Some(base_resv));
    t.eq("no surplus left", surp, Some(0));
    if cowlab {
        t.eq("MemFree back to its value", meminfo(b"MemFree:"), mem_free0);
    }
    t.finish()
}

/// On the host, xtask runs programs in parallel and they share one pool: `t_cow` and
/// `t_hugetlb` each hold this lock (`flock` on `/tmp/cowlab-hugetlb.lock`) while they size the
/// pool and count its pages. cowlab runs one program per boot and has no `flock`.
fn lock_pool() -> Option<i32> {
    if on_cowlab() {
        return None;
    }
    let fd = open_mode(c"/tmp/cowlab-hugetlb.lock", O_RDWR | O_CREAT, 0o666).ok()?;
    // SAFETY: flock(fd, LOCK_EX) takes no memory.
    let _ = unsafe { raw(73, [fd as usize, 2, 0, 0, 0, 0]) };
    Some(fd)
}

#[inline(never)]
fn prefault_stack() {
    let mut probe = [0u8; 64 * 1024];
    core::hint::black_box(&mut probe);
}

fn set_pool_text(text: &[u8]) -> Result<usize, Errno> {
    write_str("/proc/sys/vm/", "nr_hugepages", text)
}

/// mmap(MAP_HUGETLB) and what Linux refuses.
fn mmap_errnos(t: &mut Tester, free0: u64) {
    t.eq(
        "more pages than free: ENOMEM (reservation)",
        raw_mmap(0, (free0 as usize + 1) * HPAGE, RW, HUGE_ANON, -1, 0),
        Err(Errno(errno::ENOMEM)),
    );
    t.eq(
        "MAP_HUGE_64KB: EINVAL (no such pool)",
        raw_mmap(0, HPAGE, RW, HUGE_ANON | HUGE_64KB, -1, 0),
        Err(Errno(errno::EINVAL)),
    );
    let gig = read_num(
        "/sys/kernel/mm/hugepages/hugepages-1048576kB/",
        "free_hugepages",
    );
    let r = raw_mmap(0, HPAGE, RW, HUGE_ANON | HUGE_1GB, -1, 0);
    match gig {
        None => t.eq(
            "MAP_HUGE_1GB without 1 GiB pages: EINVAL",
            r,
            Err(Errno(errno::EINVAL)),
        ),
        Some(0) => t.eq(
            "MAP_HUGE_1GB with none free: ENOMEM",
            r,
            Err(Errno(errno::ENOMEM)),
        ),
        Some(_) => {
            if let Ok(p) = r {
                let _ = munmap(p, 1 << 30);
            }
        }
    }
    t.eq(
        "MAP_FIXED at an address not 2 MiB aligned: EINVAL",
        raw_mmap(0x7e00_0000_1000, HPAGE, RW, HUGE_ANON | MAP_FIXED, -1, 0),
        Err(Errno(errno::EINVAL)),
    );
    let p = raw_mmap(0, PAGE, RW, HUGE_ANON | HUGE_2MB, -1, 0);
    t.check("MAP_HUGETLB|MAP_HUGE_2MB of 4 KiB", p.is_ok());
    let Ok(p) = p else { return };
    t.check("2 MiB aligned", p % HPAGE == 0);
    t.eq("reserved at mmap", resv_pages(), 1);
    t.eq("nothing taken yet", free_pages(), free0);
    poke(p + HPAGE - 1, 7);
    t.eq("the length was rounded up to 2 MiB", peek(p + HPAGE - 1), 7);
    t.eq("the fault consumed the reservation", resv_pages(), 0);
    t.eq("one page taken", free_pages(), free0 - 1);
    t.eq(
        "smaps: KernelPageSize 2048 kB",
        smaps_page_kb(p),
        Some(2048),
    );
    t.eq(
        "munmap 4 KiB of it: EINVAL",
        munmap(p, PAGE),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "munmap from +4 KiB: EINVAL",
        munmap(p + PAGE, HPAGE),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "mprotect 4 KiB: EINVAL",
        mprotect(p, PAGE, PROT_READ),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "mremap: EINVAL",
        mremap(p, HPAGE, 2 * HPAGE, MREMAP_MAYMOVE),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "MADV_DONTNEED of 4 KiB: 0",
        madvise(p, PAGE, MADV_DONTNEED),
        Ok(0),
    );
    t.eq(
        "... which drops nothing (rounded down)",
        peek(p + HPAGE - 1),
        7,
    );
    t.eq(
        "MADV_DONTNEED from +4 KiB: EINVAL",
        madvise(p + PAGE, PAGE, MADV_DONTNEED),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "mprotect R/O of the page",
        mprotect(p, HPAGE, PROT_READ),
        Ok(0),
    );
    let status = in_child(|| {
        poke(p, 1);
        0
    });
    t.check_why(
        "a write to the R/O page is SIGSEGV",
        wifsignaled(status) && wtermsig(status) == 11,
        status,
    );
    t.eq("mprotect R/W again", mprotect(p, HPAGE, RW), Ok(0));
    poke(p, 9);
    t.eq("writable again", peek(p), 9);
    t.eq("munmap 2 MiB", munmap(p, HPAGE), Ok(0));
    t.eq("the page is back in the pool", free_pages(), free0);

    // MAP_NORESERVE: no promise at mmap; with the pool used up the fault is SIGBUS.
    let all = raw_mmap(0, free0 as usize * HPAGE, RW, HUGE_ANON, -1, 0).unwrap_or(0);
    t.check("map every free page", all != 0);
    let nores = raw_mmap(0, HPAGE, RW, HUGE_ANON | MAP_NORESERVE, -1, 0);
    t.check_why(
        "MAP_NORESERVE maps with no page to promise",
        nores.is_ok(),
        format_args!("{nores:?}"),
    );
    t.eq(
        "without MAP_NORESERVE: ENOMEM",
        raw_mmap(0, HPAGE, RW, HUGE_ANON, -1, 0),
        Err(Errno(errno::ENOMEM)),
    );
    if let Ok(q) = nores {
        // The reserved pages are not taken yet but promised: the fault finds none.
        let status = in_child(|| {
            poke(q, 1);
            0
        });
        t.check_why(
            "its fault finds no page: SIGBUS",
            wifsignaled(status) && wtermsig(status) == 7,
            status,
        );
        let _ = munmap(q, HPAGE);
    }
    if all != 0 {
        let _ = munmap(all, free0 as usize * HPAGE);
    }
    t.eq("every page back", free_pages(), free0);
    t.eq("every promise back", resv_pages(), 0);
}

/// memfd_create(MFD_HUGETLB) files.
fn memfd_files(t: &mut Tester, free0: u64) {
    t.eq(
        "MFD_HUGE_2MB without MFD_HUGETLB: EINVAL",
        memfd(HUGE_2MB),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "MFD_HUGETLB with a size that has no pool: ENODEV",
        memfd(MFD_HUGETLB | HUGE_64KB),
        Err(Errno(ENODEV)),
    );
    let fd = memfd(MFD_HUGETLB | HUGE_2MB);
    t.check("memfd_create(MFD_HUGETLB | MFD_HUGE_2MB)", fd.is_ok());
    let Ok(fd) = fd else { return };
    t.eq(
        "ftruncate to 4 KiB: EINVAL",
        ftruncate(fd, PAGE as i64),
        Err(Errno(errno::EINVAL)),
    );
    t.eq("ftruncate to 4 MiB", ftruncate(fd, 2 * HPAGE as i64), Ok(0));
    t.eq("write: EINVAL", write(fd, b"x"), Err(Errno(errno::EINVAL)));
    let mut buf = [0xaau8; 8];
    t.eq("read a hole", read(fd, &mut buf), Ok(8));
    t.eq("... zeroes", buf, [0u8; 8]);
    t.eq(
        "mmap at offset 4 KiB: EINVAL",
        raw_mmap(0, HPAGE, RW, MAP_SHARED, fd, PAGE as u64),
        Err(Errno(errno::EINVAL)),
    );
    let a = raw_mmap(0, 2 * HPAGE, RW, MAP_SHARED, fd, 0).unwrap_or(0);
    let b = raw_mmap(0, HPAGE, RW, MAP_SHARED, fd, HPAGE as u64).unwrap_or(0);
    t.check("two shared mappings", a != 0 && b != 0);
    t.eq("the file's 2 pages reserved once", resv_pages(), 2);
    if a != 0 && b != 0 {
        poke(a + HPAGE + 5, 0x5a);
        t.eq("a store shows in the other mapping", peek(b + 5), 0x5a);
        let mut one = [0u8; 1];
        t.eq(
            "... and to read()",
            pread(fd, &mut one, (HPAGE + 5) as u64),
            Ok(1),
        );
        t.eq("the byte", one[0], 0x5a);
        // A private mapping sees the file and copies on write.
        let c = raw_mmap(0, HPAGE, RW, MAP_PRIVATE, fd, HPAGE as u64).unwrap_or(0);
        t.check("a private mapping of it", c != 0);
        if c != 0 {
            t.eq("it reads the file", peek(c + 5), 0x5a);
            poke(c + 5, 0x11);
            t.eq("its write stays private", peek(b + 5), 0x5a);
            let _ = munmap(c, HPAGE);
        }
    }
    for m in [a, b] {
        if m != 0 {
            let _ = munmap(m, HPAGE);
        }
    }
    if a != 0 {
        let _ = munmap(a + HPAGE, HPAGE);
    }
    t.eq(
        "the file keeps its page and promise",
        (free_pages(), resv_pages()),
        (free0 - 1, 1),
    );
    t.eq(
        "fallocate past the pool: ENOSPC",
        fallocate(fd, 0, 0, (free0 as i64 + 2) * HPAGE as i64),
        Err(Errno(ENOSPC)),
    );
    t.eq("ftruncate to 0", ftruncate(fd, 0), Ok(0));
    t.eq("truncation returns the pages", free_pages(), free0);
    t.eq("fallocate 2 MiB", fallocate(fd, 0, 0, HPAGE as i64), Ok(0));
    t.eq("one page taken", free_pages(), free0 - 1);
    let _ = close(fd);
    t.eq("close returns it", free_pages(), free0);
    t.eq("no promise left", resv_pages(), 0);
}

/// fork + write: the whole huge page is copied; each side keeps its bytes.
fn cow_on_fork(t: &mut Tester, free0: u64) {
    let p = raw_mmap(0, HPAGE, RW, HUGE_ANON, -1, 0).unwrap_or(0);
    t.check("private hugetlb page for fork", p != 0);
    if p == 0 {
        return;
    }
    for i in 0..HPAGE / PAGE {
        poke(p + i * PAGE, i as u8);
    }
    let status = in_child(|| {
        if (0..HPAGE / PAGE).any(|i| peek(p + i * PAGE) != i as u8) {
            return 2;
        }
        poke(p + 3 * PAGE, 0xcc);
        // The copy carried every subpage, not only the one written.
        if peek(p + 3 * PAGE) != 0xcc || peek(p + 400 * PAGE) != 400u16 as u8 {
            return 3;
        }
        if free_pages() != free0 - 2 {
            return 4;
        }
        0
    });
    t.check_why(
        "the child reads the page, writes a copy of it all (2 pages in use)",
        wifexited(status) && wexitstatus(status) == 0,
        status,
    );
    t.eq("the parent keeps its byte", peek(p + 3 * PAGE), 3);
    poke(p + 4 * PAGE, 0x44);
    t.eq(
        "the parent writes its page after the child",
        peek(p + 4 * PAGE),
        0x44,
    );
    t.eq("the child's copy went back", free_pages(), free0 - 1);
    let _ = munmap(p, HPAGE);
    t.eq("all back after fork and COW", free_pages(), free0);
}

/// `/proc/self/smaps`: hugetlb pages are counted in `Private_Hugetlb` (mapped once) or
/// `Shared_Hugetlb` (mapped more than once: a fork child's view before either side writes),
/// never in `Rss`; `smaps_rollup` sums them.
fn smaps_hugetlb(t: &mut Tester, free0: u64) {
    let p = raw_mmap(0, 2 * HPAGE, RW, HUGE_ANON, -1, 0).unwrap_or(0);
    t.check("2 MiB x 2 for smaps", p != 0);
    if p == 0 {
        return;
    }
    t.eq(
        "smaps: nothing faulted, Private_Hugetlb 0",
        smaps_kb(p, "Private_Hugetlb:"),
        Some(0),
    );
    poke(p, 1);
    poke(p + HPAGE, 2);
    let kb = 2 * HPAGE as u64 / 1024;
    t.eq(
        "smaps: Private_Hugetlb 4096 kB",
        smaps_kb(p, "Private_Hugetlb:"),
        Some(kb),
    );
    t.eq(
        "smaps: Shared_Hugetlb 0 kB",
        smaps_kb(p, "Shared_Hugetlb:"),
        Some(0),
    );
    t.eq(
        "smaps: hugetlb pages are not Rss",
        smaps_kb(p, "Rss:"),
        Some(0),
    );
    t.eq(
        "smaps_rollup: Private_Hugetlb 4096 kB",
        rollup_kb("Private_Hugetlb:"),
        Some(kb),
    );
    let status = in_child(|| {
        let shared = smaps_kb(p, "Shared_Hugetlb:") == Some(kb);
        let private = smaps_kb(p, "Private_Hugetlb:") == Some(0);
        let rollup = rollup_kb("Shared_Hugetlb:") == Some(kb);
        // The child's write copies one page: it maps that copy once.
        poke(p, 3);
        let after = smaps_kb(p, "Shared_Hugetlb:") == Some(kb / 2)
            && smaps_kb(p, "Private_Hugetlb:") == Some(kb / 2);
        (u8::from(!shared)
            | u8::from(!private) << 1
            | u8::from(!rollup) << 2
            | u8::from(!after) << 3)
            .into()
    });
    t.eq(
        "fork child: Shared_Hugetlb 4096 kB (rollup too), after its write 2048 + 2048",
        status,
        0,
    );
    t.eq(
        "smaps: the parent's pages mapped once again",
        smaps_kb(p, "Private_Hugetlb:"),
        Some(kb),
    );
    t.eq("munmap", munmap(p, 2 * HPAGE), Ok(0));
    t.eq("smaps pages back", free_pages(), free0);
}

fn mremap5(addr: usize, old: usize, new: usize, flags: u32, to: usize) -> Result<usize, Errno> {
    // SAFETY: mremap only moves this process's own mappings; callers pass its own ranges.
    unsafe { raw(25, [addr, old, new, flags as usize, to, 0]) }
}

/// mremap of hugetlb mappings as Linux 5.17+: moves of whole huge pages to a huge-aligned
/// `MREMAP_FIXED` target (bytes and pool counts unchanged, an untouched page's reservation
/// moving with it), shrinking, and `EINVAL` for growing, an unaligned address or target,
/// `MREMAP_DONTUNMAP` and `old_len == 0`.
fn mremap_huge(t: &mut Tester, free0: u64) {
    const MREMAP_FIXED: u32 = 2;
    const MREMAP_DONTUNMAP: u32 = 4;
    const MOVE_FIXED: u32 = MREMAP_MAYMOVE | MREMAP_FIXED;
    // Room for the targets: a reserved, unpopulated area, 2 MiB aligned inside.
    let area = raw_mmap(
        0,
        12 * HPAGE,
        PROT_NONE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
        -1,
        0,
    )
    .unwrap_or(0);
    let p = raw_mmap(0, 2 * HPAGE, RW, HUGE_ANON, -1, 0).unwrap_or(0);
    t.check(
        "2 MiB x 2 and a target area for mremap",
        p != 0 && area != 0,
    );
    if p == 0 || area == 0 {
        return;
    }
    let tgt = (area + HPAGE - 1) & !(HPAGE - 1);
    poke(p + 5, 0x11);
    poke(p + HPAGE + 7, 0x22);
    let einval = Err(Errno(errno::EINVAL));
    t.eq(
        "mremap grow in place: EINVAL",
        mremap5(p, 2 * HPAGE, 3 * HPAGE, 0, 0),
        einval,
    );
    t.eq(
        "mremap grow, may move: EINVAL",
        mremap5(p, 2 * HPAGE, 3 * HPAGE, MREMAP_MAYMOVE, 0),
        einval,
    );
    t.eq(
        "mremap grow by 4 KiB: EINVAL",
        mremap5(p, HPAGE, HPAGE + PAGE, MREMAP_MAYMOVE, 0),
        einval,
    );
    t.eq(
        "mremap old_len 0: EINVAL",
        mremap5(p, 0, HPAGE, MREMAP_MAYMOVE, 0),
        einval,
    );
    t.eq(
        "mremap from an address not 2 MiB aligned: EINVAL",
        mremap5(p + PAGE, PAGE, PAGE, MOVE_FIXED, tgt),
        einval,
    );
    t.eq(
        "mremap to a target not 2 MiB aligned: EINVAL",
        mremap5(p, HPAGE, HPAGE, MOVE_FIXED, tgt + PAGE),
        einval,
    );
    t.eq(
        "mremap MREMAP_DONTUNMAP: EINVAL",
        mremap5(p, HPAGE, HPAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0),
        einval,
    );
    t.eq(
        "mremap shrink with an unaligned (unused) target: EINVAL all the same",
        mremap5(p, 2 * HPAGE, HPAGE, 0, PAGE),
        einval,
    );
    t.eq(
        "mremap same size without MREMAP_FIXED: a no-op",
        mremap5(p, HPAGE, HPAGE, MREMAP_MAYMOVE, 0),
        Ok(p),
    );
    t.eq(
        "mremap the second page to a 2 MiB aligned target",
        mremap5(p + HPAGE, HPAGE, HPAGE, MOVE_FIXED, tgt),
        Ok(tgt),
    );
    t.eq("its bytes moved with it", peek(tgt + 7), 0x22);
    t.eq("the first page stays", peek(p + 5), 0x11);
    t.eq("a move takes no page", free_pages(), free0 - 2);
    t.eq(
        "the old place is gone: EFAULT",
        mremap5(p + HPAGE, HPAGE, HPAGE, MOVE_FIXED, tgt + 2 * HPAGE),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "4 KiB lengths move the whole huge page",
        mremap5(p, PAGE, PAGE, MOVE_FIXED, tgt + 2 * HPAGE),
        Ok(tgt + 2 * HPAGE),
    );
    t.eq("... with its bytes", peek(tgt + 2 * HPAGE + 5), 0x11);
    t.eq("munmap the moved pages", munmap(tgt, 3 * HPAGE), Ok(0));
    t.eq("both pages back", free_pages(), free0);
    // An untouched mapping's reservation moves with it.
    let q = raw_mmap(0, 2 * HPAGE, RW, HUGE_ANON, -1, 0).unwrap_or(0);
    t.check("2 MiB x 2 untouched", q != 0);
    if q != 0 {
        let resv = resv_pages();
        t.eq(
            "move it whole",
            mremap5(q, 2 * HPAGE, 2 * HPAGE, MOVE_FIXED, tgt + 4 * HPAGE),
            Ok(tgt + 4 * HPAGE),
        );
        t.eq("the reservation moved with it", resv_pages(), resv);
        poke(tgt + 4 * HPAGE, 1);
        poke(tgt + 5 * HPAGE, 2);
        t.eq("its faults consumed it", resv_pages(), resv - 2);
        t.eq(
            "shrink to one page",
            mremap5(tgt + 4 * HPAGE, 2 * HPAGE, HPAGE, 0, 0),
            Ok(tgt + 4 * HPAGE),
        );
        t.eq("the tail page went back", free_pages(), free0 - 1);
        t.eq("munmap", munmap(tgt + 4 * HPAGE, HPAGE), Ok(0));
    }
    let _ = munmap(area, 12 * HPAGE);
    t.eq("mremap: every page back", free_pages(), free0);
}

/// vmsplice of a whole huge page into an empty pipe: Linux queues what fits (16 pages) and
/// returns, it never waits for a reader once something is queued (cowlab slept there until
/// this test: cow.c's vmsplice families on 2 MiB pages deadlocked). The pipe's references keep
/// the page out of the pool after munmap.
fn vmsplice_huge(t: &mut Tester, free0: u64) {
    let p = raw_mmap(0, HPAGE, RW, HUGE_ANON, -1, 0).unwrap_or(0);
    let fds = pipe().unwrap_or([-1, -1]);
    t.check("a huge page and a pipe", p != 0 && fds[0] >= 0);
    if p == 0 || fds[0] < 0 {
        return;
    }
    for i in 0..16 {
        poke(p + i * PAGE, 0x30 + i as u8);
    }
    let iov = [p, HPAGE];
    // SAFETY: one iovec naming this process's mapping; vmsplice only takes references.
    let n = unsafe { raw(278, [fds[1] as usize, iov.as_ptr() as usize, 1, 0, 0, 0]) };
    t.eq("vmsplice of 2 MiB: the 64 KiB that fit", n, Ok(16 * PAGE));
    let _ = munmap(p, HPAGE);
    t.eq(
        "the pipe's references keep the page",
        free_pages(),
        free0 - 1,
    );
    let mut buf = [0u8; PAGE];
    let mut ok = true;
    for i in 0..16 {
        ok &= read(fds[0], &mut buf) == Ok(PAGE) && buf[0] == 0x30 + i as u8;
    }
    t.check("the pipe holds the page's bytes", ok);
    let _ = close(fds[0]);
    let _ = close(fds[1]);
    t.eq("read and closed: back in the pool", free_pages(), free0);
}

const PIN_LONGTERM_TEST_START: u64 = 0x4018_6707;
const PIN_LONGTERM_TEST_STOP: u64 = 0x6708;
const FLAG_WRITE: u32 = 1;
const FLAG_FAST: u32 = 2;

#[repr(C)]
struct PinLongterm {
    addr: u64,
    size: u64,
    flags: u32,
}

fn ioctl(fd: i32, cmd: u64, arg: usize) -> Result<usize, Errno> {
    // SAFETY: the gup_test ioctls read or write only the argument the caller passes.
    unsafe { raw(16, [fd as usize, cmd as usize, arg, 0, 0, 0]) }
}

/// Long-term pins, R/O and R/W, slow and fast, on a private hugetlb page and a shared
/// hugetlb memfd page; each pin keeps the page out of the pool after munmap until released.
fn pins(t: &mut Tester, free0: u64) {
    let Ok(gup) = open(c"/sys/kernel/debug/gup_test", O_RDWR) else {
        println!("t_hugetlb: skip: pins: no /sys/kernel/debug/gup_test");
        t.check("cowlab has gup_test", !on_cowlab());
        return;
    };
    for shared in [false, true] {
        for flags in [0, FLAG_WRITE, FLAG_FAST, FLAG_WRITE | FLAG_FAST] {
            let fd = if shared {
                memfd(MFD_HUGETLB).unwrap_or(-1)
            } else {
                -1
            };
            if shared {
                let _ = ftruncate(fd, HPAGE as i64);
            }
            let p = if shared {
                raw_mmap(0, HPAGE, RW, MAP_SHARED, fd, 0)
            } else {
                raw_mmap(0, HPAGE, RW, HUGE_ANON, -1, 0)
            }
            .unwrap_or(0);
            if p == 0 {
                t.check("map for the pin", false);
                continue;
            }
            poke(p, 1);
            let args = PinLongterm {
                addr: p as u64,
                size: HPAGE as u64,
                flags,
            };
            let started = ioctl(gup, PIN_LONGTERM_TEST_START, &args as *const _ as usize);
            let which = match (shared, flags) {
                (false, 0) => "private R/O slow",
                (false, 1) => "private R/W slow",
                (false, 2) => "private R/O fast",
                (false, _) => "private R/W fast",
                (true, 0) => "shared R/O slow",
                (true, 1) => "shared R/W slow",
                (true, 2) => "shared R/O fast",
                (true, _) => "shared R/W fast",
            };
            t.check_why(which, started.is_ok(), format_args!("{started:?}"));
            let _ = munmap(p, HPAGE);
            if fd >= 0 {
                let _ = close(fd);
            }
            if started.is_ok() {
                t.eq(
                    "the pinned page stays out of the pool",
                    free_pages(),
                    free0 - 1,
                );
                let _ = ioctl(gup, PIN_LONGTERM_TEST_STOP, 0);
            }
            t.eq("released: back in the pool", free_pages(), free0);
        }
    }
    let _ = close(gup);
}

/// 1 GiB pages (huge3), where the machine has two free (cowlab: the boot with
/// `hugepagesz=1G hugepages=2`, a 4 GiB guest; a host with that pool): a private
/// `MAP_HUGE_1GB` mapping faults one zeroed GiB in, a fork child's write copies the whole GiB
/// (its other bytes came along, the parent's stay), a shared `MFD_HUGE_1GB` memfd stays shared
/// over fork, a cut inside the GiB is EINVAL, every page goes back. Elsewhere: skipped.
fn gigantic(t: &mut Tester) {
    let Some(free) = read_num(SYSFS_1G, "free_hugepages") else {
        println!("t_hugetlb: skip: no 1 GiB pages here (no {SYSFS_1G})");
        return;
    };
    if free < 2 {
        println!("t_hugetlb: skip: {free} free 1 GiB pages (the checks need 2)");
        return;
    }
    let t0 = monotonic_ns();
    let p = raw_mmap(0, GPAGE, RW, HUGE_ANON | HUGE_1GB, -1, 0).unwrap_or(0);
    t.check("mmap MAP_HUGETLB | MAP_HUGE_1GB, 1 GiB", p != 0);
    if p == 0 {
        return;
    }
    t.eq("1 GiB aligned", p % GPAGE, 0);
    t.eq(
        "the private mapping reserved one page",
        read_num(SYSFS_1G, "resv_hugepages"),
        Some(1),
    );
    t.eq(
        "munmap 2 MiB of it: EINVAL",
        munmap(p + HPAGE, HPAGE),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "smaps: KernelPageSize 1048576 kB",
        smaps_page_kb(p),
        Some(GPAGE as u64 / 1024),
    );
    let offs = [0usize, 12345 * PAGE + 7, GPAGE / 2, GPAGE - 1];
    for (i, &o) in offs.iter().enumerate() {
        t.eq("a fresh GiB reads zero", peek(p + o), 0);
        poke(p + o, 0x40 + i as u8);
    }
    t.eq(
        "one page in use",
        read_num(SYSFS_1G, "free_hugepages"),
        Some(free - 1),
    );
    // A long-term pin of the whole GiB through gup_test (cow.c's R/O pin cases on 1 GiB
    // pages): 262144 subpages in one ioctl (cowlab refused more than 65536 with ENOMEM).
    if let Ok(gup) = open(c"/sys/kernel/debug/gup_test", O_RDWR) {
        let args = PinLongterm {
            addr: p as u64,
            size: GPAGE as u64,
            flags: FLAG_FAST,
        };
        let started = ioctl(gup, PIN_LONGTERM_TEST_START, &args as *const _ as usize);
        t.eq("gup_test: a long-term pin of the whole GiB", started, Ok(0));
        if started.is_ok() {
            t.eq("... released", ioctl(gup, PIN_LONGTERM_TEST_STOP, 0), Ok(0));
        }
        let _ = close(gup);
    }
    let status = in_child(|| {
        // The write copies the whole GiB (the pool's second page).
        poke(p + GPAGE / 2, 0x77);
        let ok = peek(p + GPAGE / 2) == 0x77
            && peek(p) == 0x40
            && peek(p + 12345 * PAGE + 7) == 0x41
            && peek(p + GPAGE - 1) == 0x43;
        if ok {
            0
        } else {
            1
        }
    });
    t.eq("the child's write copies the whole GiB", status, 0);
    t.eq("the parent keeps its byte", peek(p + GPAGE / 2), 0x42);
    t.eq(
        "smaps: Private_Hugetlb 1048576 kB",
        smaps_kb(p, "Private_Hugetlb:"),
        Some(GPAGE as u64 / 1024),
    );
    // mremap moves the GiB whole, to a 1 GiB aligned target only.
    let area = raw_mmap(
        0,
        3 * GPAGE,
        PROT_NONE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
        -1,
        0,
    )
    .unwrap_or(0);
    let tgt = (area + GPAGE - 1) & !(GPAGE - 1);
    t.eq(
        "mremap the GiB to a 2 MiB aligned target: EINVAL",
        mremap5(p, GPAGE, GPAGE, MREMAP_MAYMOVE | 2, tgt + HPAGE),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "mremap the GiB to grow by 2 MiB: EINVAL",
        mremap5(p, GPAGE, GPAGE + HPAGE, MREMAP_MAYMOVE, 0),
        Err(Errno(errno::EINVAL)),
    );
    let moved = mremap5(p, GPAGE, GPAGE, MREMAP_MAYMOVE | 2, tgt);
    t.eq("mremap the GiB to a 1 GiB aligned target", moved, Ok(tgt));
    let p = if moved == Ok(tgt) { tgt } else { p };
    t.eq("its bytes moved with it", peek(p + GPAGE / 2), 0x42);
    t.eq("... all of them", peek(p + GPAGE - 1), 0x43);
    t.eq("munmap the GiB", munmap(p, GPAGE), Ok(0));
    let _ = munmap(area, 3 * GPAGE);
    t.eq(
        "both pages back",
        read_num(SYSFS_1G, "free_hugepages"),
        Some(free),
    );
    // A shared MFD_HUGE_1GB memfd stays shared over fork.
    let fd = memfd(MFD_HUGETLB | HUGE_1GB);
    t.check("memfd_create(MFD_HUGETLB | MFD_HUGE_1GB)", fd.is_ok());
    if let Ok(fd) = fd {
        t.eq(
            "ftruncate to 2 MiB: EINVAL",
            ftruncate(fd, HPAGE as i64),
            Err(Errno(errno::EINVAL)),
        );
        t.eq("ftruncate to 1 GiB", ftruncate(fd, GPAGE as i64), Ok(0));
        let m = raw_mmap(0, GPAGE, RW, MAP_SHARED, fd, 0).unwrap_or(0);
        t.check("mmap it shared", m != 0);
        if m != 0 {
            poke(m + 5, 1);
            let status = in_child(|| {
                poke(m + GPAGE - 5, 0x5a);
                0
            });
            t.eq("child ran", status, 0);
            t.eq(
                "the child's store shows in the parent",
                peek(m + GPAGE - 5),
                0x5a,
            );
            t.eq("munmap", munmap(m, GPAGE), Ok(0));
        }
        let _ = close(fd);
    }
    t.eq(
        "every 1 GiB page back",
        read_num(SYSFS_1G, "free_hugepages"),
        Some(free),
    );
    // Run time: shrinking gives a GiB back to the allocator (MemFree), growing again takes an
    // aligned free GiB (Linux `alloc_contig_pages`; cowlab finds the one just freed).
    let nr = read_num(SYSFS_1G, "nr_hugepages").unwrap_or(0);
    let mem0 = meminfo(b"MemFree:").unwrap_or(0);
    let gib_kb = GPAGE as u64 / 1024;
    t.check(
        "nr_hugepages (1 GiB) shrinks by one",
        write_str(SYSFS_1G, "nr_hugepages", num(nr - 1).as_bytes()).is_ok()
            && read_num(SYSFS_1G, "nr_hugepages") == Some(nr - 1),
    );
    // (1 MiB of slack for whatever else allocates meanwhile: the GiB is what is checked.)
    t.check(
        "... and MemFree grows by 1 GiB",
        meminfo(b"MemFree:").unwrap_or(0) + 1024 >= mem0 + gib_kb,
    );
    let grown = write_str(SYSFS_1G, "nr_hugepages", num(nr).as_bytes()).is_ok();
    let back = read_num(SYSFS_1G, "nr_hugepages");
    if on_cowlab() {
        t.check(
            "nr_hugepages (1 GiB) grows back at run time",
            grown && back == Some(nr),
        );
    } else {
        // A host may have spent the GiB meanwhile: Linux then reports a short count.
        t.check("nr_hugepages (1 GiB) regrow: a short count at worst", grown);
    }
    let ms = (monotonic_ns() - t0) / 1_000_000;
    println!("t_hugetlb: 1 GiB checks took {ms} ms");
}

/// `n` in decimal (a small stack string).
fn num(n: u64) -> NumText {
    let mut t = NumText([0; 20], 20);
    let mut v = n;
    loop {
        t.1 -= 1;
        t.0[t.1] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    t
}

/// A decimal number's digits at the end of a buffer.
struct NumText([u8; 20], usize);

impl NumText {
    fn as_bytes(&self) -> &[u8] {
        &self.0[self.1..]
    }
}

/// `KernelPageSize` (kB) in `/proc/self/smaps` of the mapping that starts at `start`.
fn smaps_page_kb(start: usize) -> Option<u64> {
    smaps_kb(start, "KernelPageSize:")
}

/// The `key` line (kB) of `/proc/self/smaps` for the mapping that starts at `start`.
fn smaps_kb(start: usize, key: &str) -> Option<u64> {
    let mut buf = [0u8; 32 * 1024];
    let n = read_file(c"/proc/self/smaps", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut v = start;
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[v % 16];
        v /= 16;
        if v == 0 {
            break;
        }
    }
    let head = core::str::from_utf8(&hex[i..]).ok()?;
    let mut lines = text
        .lines()
        .skip_while(|l| l.split('-').next().map(|a| a.trim_start_matches('0')) != Some(head));
    lines.next()?;
    // Up to the next mapping's header (a line that is not `Key: value`).
    let line = lines
        .take_while(|l| !l.contains('-'))
        .find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `key` line (kB) of `/proc/self/smaps_rollup`.
fn rollup_kb(key: &str) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(c"/proc/self/smaps_rollup", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
