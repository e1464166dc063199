//! `/sys/kernel/mm`: the THP controls of `transparent_hugepage/` (Linux `mm/huge_memory.c`'s
//! sysfs attributes) over `cowlab_mm::huge_memory::ThpSettings`.
//!
//! `enabled` (`always`, `madvise`, `never`), `defrag` (`always`, `defer`, `defer+madvise`,
//! `madvise`, `never`) and `use_zero_page` (`0`/`1`) read with the selection bracketed and take
//! one word; `hpage_pmd_size` is read-only. A write of anything else is `EINVAL`, as Linux.
//! `hugepages/hugepages-2048kB/{nr,free,resv,surplus}_hugepages`: the hugetlb pool's counts;
//! a write of a number to `nr_hugepages` resizes the pool as far as memory allows.
//! `hugepages/hugepages-1048576kB/` the same for the 1 GiB pool, where the CPU has 1 GiB
//! pages (growing it needs 1 GiB-aligned free GiBs: the count reached is what reads back).
//! `transparent_hugepage/hugepages-<N>kB/enabled` for N = 16..2048 (`always`, `inherit`,
//! `madvise`, `never`; `cowlab_mm::mthp`) and its `stats/{anon_fault_alloc,
//! anon_fault_fallback,nr_anon,split}` (read-only).
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use core::any::Any;

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::rw::CHUNK;
use super::stat::{statfs_of, Stat, StatFs, ST_NODEV, ST_NOEXEC, ST_NOSUID, S_IFREG};
use crate::errno::Errno;
use crate::memory;

/// Linux's `SYSFS_MAGIC`.
pub const SYSFS_MAGIC: u64 = 0x6265_6572;

/// One attribute of `transparent_hugepage/`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Knob {
    Enabled,
    Defrag,
    UseZeroPage,
    HpagePmdSize,
    /// `hugepages/hugepages-2048kB/`: the hugetlb pool (`cowlab_mm::hugetlb`); only
    /// `nr_hugepages` is writable.
    NrHugepages,
    FreeHugepages,
    ResvHugepages,
    SurplusHugepages,
    /// `transparent_hugepage/hugepages-<N>kB/enabled` of the size of this order.
    SizeEnabled(u8),
    /// `hugepages/hugepages-1048576kB/<attr>`: the 1 GiB pool; 0..=3 are `nr`, `free`, `resv`,
    /// `surplus_hugepages` (only `nr_hugepages` writable).
    Gigantic(u8),
    /// `transparent_hugepage/hugepages-<N>kB/stats/<stat>`: the order and the stat.
    SizeStat(u8, SizeStat),
}

/// The per-size counters offered under `hugepages-<N>kB/stats/`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SizeStat {
    AnonFaultAlloc,
    AnonFaultFallback,
    NrAnon,
    Split,
}

/// `hugepages-<N>kB/<attr>` below `transparent_hugepage/`.
fn size_knob(path: &str) -> Option<Knob> {
    let rest = path.strip_prefix("hugepages-")?;
    let (kb, attr) = rest.split_once("kB/")?;
    let order = cowlab_mm::mthp::order_of_kb(kb.parse().ok()?)? as u8;
    if attr == "enabled" {
        return Some(Knob::SizeEnabled(order));
    }
    let stat = match attr.strip_prefix("stats/")? {
        "anon_fault_alloc" => SizeStat::AnonFaultAlloc,
        "anon_fault_fallback" => SizeStat::AnonFaultFallback,
        "nr_anon" => SizeStat::NrAnon,
        "split" => SizeStat::Split,
        _ => return None,
    };
    Some(Knob::SizeStat(order, stat))
}

impl Knob {
    /// The attribute at `name` below `/sys/kernel/mm`.
    pub fn by_path(name: &str) -> Option<Knob> {
        if let Some(attr) = name.strip_prefix("hugepages/hugepages-2048kB/") {
            return Some(match attr {
                "nr_hugepages" => Knob::NrHugepages,
                "free_hugepages" => Knob::FreeHugepages,
                "resv_hugepages" => Knob::ResvHugepages,
                "surplus_hugepages" => Knob::SurplusHugepages,
                _ => return None,
            });
        }
        if let Some(attr) = name.strip_prefix("hugepages/hugepages-1048576kB/") {
            if !cowlab_mm::hugetlb::gigantic_supported() {
                return None;
            }
            return Some(Knob::Gigantic(match attr {
                "nr_hugepages" => 0,
                "free_hugepages" => 1,
                "resv_hugepages" => 2,
                "surplus_hugepages" => 3,
                _ => return None,
            }));
        }
        let thp = name.strip_prefix("transparent_hugepage/")?;
        if thp.starts_with("hugepages-") {
            return size_knob(thp);
        }
        Some(match thp {
            "enabled" => Knob::Enabled,
            "defrag" => Knob::Defrag,
            "use_zero_page" => Knob::UseZeroPage,
            "hpage_pmd_size" => Knob::HpagePmdSize,
            _ => return None,
        })
    }

    pub fn writable(self) -> bool {
        !matches!(
            self,
            Knob::HpagePmdSize
                | Knob::FreeHugepages
                | Knob::ResvHugepages
                | Knob::SurplusHugepages
                | Knob::SizeStat(..)
        ) && !matches!(self, Knob::Gigantic(1..))
    }

    /// A distinct inode number per attribute.
    fn ino(self) -> u64 {
        0x5100
            + match self {
                Knob::Enabled => 0,
                Knob::Defrag => 1,
                Knob::UseZeroPage => 2,
                Knob::HpagePmdSize => 3,
                Knob::NrHugepages => 4,
                Knob::FreeHugepages => 5,
                Knob::ResvHugepages => 6,
                Knob::SurplusHugepages => 7,
                Knob::SizeEnabled(o) => 0x10 * u64::from(o),
                Knob::Gigantic(a) => 8 + u64::from(a),
                Knob::SizeStat(o, st) => 0x10 * u64::from(o) + 1 + st as u64,
            }
    }

    fn show(self) -> String {
        let thp = memory::mm().thp();
        let mut out = String::new();
        match self {
            Knob::Enabled => thp.show_enabled(&mut out),
            Knob::Defrag => thp.show_defrag(&mut out),
            Knob::UseZeroPage => out = format!("{}\n", u8::from(thp.use_zero_page())),
            Knob::HpagePmdSize => out = format!("{}\n", cowlab_mm::folio::HPAGE_PMD_SIZE),
            Knob::SizeEnabled(order) => thp.sizes.show_enabled(u32::from(order), &mut out),
            Knob::SizeStat(order, st) => {
                let c = thp.sizes.stats(u32::from(order));
                let v = match st {
                    SizeStat::AnonFaultAlloc => c.anon_fault_alloc,
                    SizeStat::AnonFaultFallback => c.anon_fault_fallback,
                    SizeStat::NrAnon => c.nr_anon,
                    SizeStat::Split => c.split,
                };
                out = format!("{v}\n");
            }
            Knob::NrHugepages
            | Knob::FreeHugepages
            | Knob::ResvHugepages
            | Knob::SurplusHugepages => {
                let c = memory::mm().frames().hugetlb_counts();
                let v = match self {
                    // Every hugetlb page, surplus included (Linux `nr_hugepages_show`);
                    // `/proc/sys/vm/nr_hugepages` shows the persistent size instead.
                    Knob::NrHugepages => c.total,
                    Knob::FreeHugepages => c.free,
                    Knob::ResvHugepages => c.resv,
                    _ => c.surplus,
                };
                out = format!("{v}\n");
            }
            Knob::Gigantic(attr) => {
                let c = memory::mm()
                    .frames()
                    .hugetlb_counts_of(cowlab_mm::frame::HugeSize::Pud);
                let v = [c.total, c.free, c.resv, c.surplus][usize::from(attr & 3)];
                out = format!("{v}\n");
            }
        }
        out
    }

    fn store(self, input: &str) -> Result<(), Errno> {
        let thp = memory::mm().thp();
        match self {
            Knob::Enabled => thp.store_enabled(input),
            Knob::Defrag => thp.store_defrag(input),
            Knob::UseZeroPage => thp.store_use_zero_page(input),
            Knob::SizeEnabled(order) => thp.sizes.store_enabled(u32::from(order), input),
            Knob::NrHugepages => {
                let n = cowlab_mm::hugetlb::parse_nr_hugepages(input, false)
                    .map_err(|_| Errno::EINVAL)?;
                memory::mm().frames().hugetlb_set_max(n);
                return Ok(());
            }
            Knob::Gigantic(0) => {
                let n = cowlab_mm::hugetlb::parse_nr_hugepages(input, false)
                    .map_err(|_| Errno::EINVAL)?;
                memory::mm()
                    .frames()
                    .hugetlb_set_max_of(cowlab_mm::frame::HugeSize::Pud, n);
                return Ok(());
            }
            Knob::HpagePmdSize
            | Knob::Gigantic(_)
            | Knob::FreeHugepages
            | Knob::ResvHugepages
            | Knob::SurplusHugepages
            | Knob::SizeStat(..) => return Err(Errno::EACCES),
        }
        .map_err(|_| Errno::EINVAL)
    }
}

/// An open attribute.
pub struct SysMmFile(pub Knob);

impl SysMmFile {
    /// Opens `name` with `flags` (`EACCES` for write access to a read-only attribute, as
    /// kernfs).
    pub fn open(name: &str, flags: u32) -> Option<Result<Box<dyn FileOps>, Errno>> {
        let knob = Knob::by_path(name)?;
        if flags & super::O_ACCMODE != 0 && !knob.writable() {
            return Some(Err(Errno::EACCES));
        }
        Some(Ok(Box::new(SysMmFile(knob))))
    }
}

impl FileOps for SysMmFile {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        let text = self.0.show();
        let from = (io.pos as usize).min(text.len());
        let end = text.len().min(from + to.count().min(CHUNK));
        let n = to.copy_to(&text.as_bytes()[from..end]);
        io.pos += n as u64;
        to.finish(n)
    }

    fn write_iter(&self, _io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        let data = from.copy_from_vec(CHUNK)?;
        if data.is_empty() && from.faulted() {
            return Err(Errno::EFAULT);
        }
        let text = core::str::from_utf8(&data).map_err(|_| Errno::EINVAL)?;
        self.0.store(text)?;
        Ok(data.len())
    }

    fn seek(&self) -> Seek {
        Seek::Size(0)
    }

    fn stat(&self) -> Stat {
        let mode = S_IFREG | if self.0.writable() { 0o644 } else { 0o444 };
        Stat::base(mode, self.0.ino())
    }

    fn statfs(&self) -> StatFs {
        statfs_of(SYSFS_MAGIC, ST_NOSUID | ST_NODEV | ST_NOEXEC)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
