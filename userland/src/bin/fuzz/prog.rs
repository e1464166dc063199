//! Programs: sequences of calls with typed arguments, generated and mutated from a seeded
//! generator, and their text form (what the fuzzer prints before running one and what a
//! reproducer file holds: `name arg,arg,...`, one call a line or `;`-separated).
//!
//! An argument is a value (`i<hex>`), a resource made by an earlier call (`r<kind>.<n>`: the
//! n-th, modulo how many exist when the call runs), a pointer into the fuzzer's data
//! (`b<region>.<hex offset>`), a path (`p<n>`) or an iovec array (`v<count>.<hex len>.<bad>`).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use super::layout::{self, Region, PATHS};
use super::table::{Ty, CALLS};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Arg {
    Imm(u64),
    Res(u8, u8),
    Buf(u8, u32),
    Path(u8),
    Iov(u16, u32, u8),
}

/// Resource kinds (the `r<kind>` of the text form).
pub const RES_FD: u8 = 0;
pub const RES_ADDR: u8 = 1;
pub const RES_RING: u8 = 2;
pub const RES_AIO: u8 = 3;
/// Pids of the program's children (`spawn`).
pub const RES_PID: u8 = 4;
/// Descriptors the child opens before the program on the ext2 root (`exec::EXT2_FDS`).
pub const RES_EXT2: u8 = 5;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Call {
    /// Index into `table::CALLS`.
    pub call: u16,
    pub args: Vec<Arg>,
}

pub type Prog = Vec<Call>;

/// xorshift64* seeded through splitmix64: the only source of randomness.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Integers at the edges: zero, small, around pages and powers of two, sign and canonical
/// boundaries, the largest values.
const EDGE_INTS: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    16,
    0xff,
    0x100,
    0xfff,
    0x1000,
    0x1001,
    0x2000,
    0x10000,
    0x7fff_f000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    0x7fff_ffff_f000,
    0x8000_0000_0000,
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    0xffff_ffff_ffff_f000,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
    (-100i64) as u64,
];

/// Addresses at the edges: null, the first page, unaligned, the top of user space and just
/// past it, non-canonical, the kernel's halves, an unmapped canonical one.
const EDGE_ADDRS: &[u64] = &[
    0,
    1,
    0xfff,
    0x1000,
    layout::DATA + 1,
    layout::DATA + 0xffc,
    0x7fff_ffff_f000,
    0x7fff_ffff_fff8,
    0x8000_0000_0000,
    0x1234_5678_9abc_def0,
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    0xffff_ffff_ffff_f000,
    u64::MAX - 7,
    0x5dea_d000_0000,
];

const EDGE_FDS: &[u64] = &[
    u64::MAX,
    3,
    4,
    100,
    1023,
    1024,
    0x7fff_ffff,
    (-100i64) as u64,
];

const OPEN_BITS: &[u64] = &[
    1, 2, 0o100, 0o200, 0o1000, 0o2000, 0o4000, 0o40000, 0o200000, 0o2000000, 0o20200000,
];
const MAP_BITS: &[u64] = &[
    0x01, 0x02, 0x03, 0x10, 0x20, 0x100, 0x2000, 0x4000, 0x8000, 0x10000, 0x100000,
];

fn bits(rng: &mut Rng, set: &[u64]) -> u64 {
    let mut v = 0;
    for _ in 0..rng.below(4) {
        v |= rng.pick(set);
    }
    if rng.one_in(16) {
        v |= rng.next() & rng.next();
    }
    v
}

fn len(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => rng.below(64),
        1 => (1 + rng.below(16)) * 4096,
        2 => ((1 + rng.below(16)) * 4096).wrapping_add(rng.pick(&[1u64, u64::MAX])),
        3 => rng.below(1 << 20),
        _ => rng.pick(EDGE_INTS),
    }
}

/// A value for an argument of type `ty`.
pub fn gen_arg(rng: &mut Rng, ty: Ty) -> Arg {
    let res = |rng: &mut Rng, kind| Arg::Res(kind, rng.below(256) as u8);
    match ty {
        Ty::Fd if rng.below(8) < 6 => res(rng, RES_FD),
        Ty::Fd if rng.one_in(2) => res(rng, RES_EXT2),
        Ty::Fd => Arg::Imm(rng.pick(EDGE_FDS)),
        Ty::Buf => gen_buf(rng),
        Ty::Len => Arg::Imm(len(rng)),
        Ty::Off => Arg::Imm(match rng.below(4) {
            0 => 0,
            1 => rng.below(3) * 4096 + rng.below(2) * rng.below(4096),
            2 => rng.below(1 << 24),
            _ => rng.pick(EDGE_INTS),
        }),
        Ty::Int => Arg::Imm(if rng.one_in(2) {
            rng.below(20)
        } else {
            rng.pick(EDGE_INTS)
        }),
        Ty::Path if rng.below(16) < 15 => Arg::Path(rng.below(PATHS.len() as u64) as u8),
        Ty::Path => gen_buf(rng),
        Ty::Addr => match rng.below(8) {
            0..=3 => res(rng, RES_ADDR),
            4 => Arg::Imm(layout::PLAY + rng.below(64) * 4096),
            5 => Arg::Buf(rng.below(3) as u8, (rng.below(66) * 4096) as u32),
            _ => Arg::Imm(rng.pick(EDGE_ADDRS)),
        },
        Ty::Prot => Arg::Imm(if rng.one_in(16) {
            rng.next() & 0xffff_ffff
        } else {
            rng.pick(&[0u64, 1, 2, 3, 4, 5, 7, 0x0100_0000])
        }),
        Ty::MapFlags => Arg::Imm(match rng.below(4) {
            0 => 0x22,
            1 => 0x21,
            _ => bits(rng, MAP_BITS),
        }),
        Ty::OpenFlags => Arg::Imm(bits(rng, OPEN_BITS)),
        Ty::Choice(set) => Arg::Imm(if rng.one_in(16) {
            rng.pick(EDGE_INTS)
        } else {
            rng.pick(set)
        }),
        Ty::Bits(set) => Arg::Imm(bits(rng, set)),
        Ty::Iov => Arg::Iov(
            if rng.one_in(8) {
                rng.pick(&[0u16, 1024, 1025, 0xffff])
            } else {
                1 + rng.below(8) as u16
            },
            len(rng) as u32,
            if rng.one_in(4) {
                1 + rng.below(2) as u8
            } else {
                0
            },
        ),
        Ty::IovCount => Arg::Imm(0),
        Ty::Ring => res(rng, RES_RING),
        Ty::Aio => res(rng, RES_AIO),
        Ty::Pid => res(rng, RES_PID),
    }
}

fn gen_buf(rng: &mut Rng) -> Arg {
    match rng.below(10) {
        0..=5 => {
            let page = rng.below(Region::Rw.pages());
            let off = match rng.below(3) {
                0 => 0,
                1 => 4096 - rng.below(64),
                _ => rng.below(4096),
            };
            Arg::Buf(Region::Rw as u8, (page * 4096 + off) as u32)
        }
        6 => Arg::Buf(Region::Ro as u8, rng.below(4096) as u32),
        7 => Arg::Buf(Region::None as u8, rng.below(4096) as u32),
        _ => Arg::Imm(rng.pick(EDGE_ADDRS)),
    }
}

pub fn gen_call(rng: &mut Rng) -> Call {
    let call = rng.below(CALLS.len() as u64) as u16;
    let args = CALLS[call as usize]
        .args
        .iter()
        .map(|&ty| gen_arg(rng, ty))
        .collect();
    Call { call, args }
}

/// The longest program.
pub const MAX_CALLS: usize = 24;

pub fn generate(rng: &mut Rng) -> Prog {
    let n = 2 + rng.below(MAX_CALLS as u64 - 1) as usize;
    (0..n).map(|_| gen_call(rng)).collect()
}

/// One to three changes to `prog`: an argument regenerated, a call inserted, removed or
/// duplicated, or calls spliced in from `other` (another corpus program).
pub fn mutate(rng: &mut Rng, prog: &mut Prog, other: &Prog) {
    for _ in 0..1 + rng.below(3) {
        match rng.below(8) {
            0..=3 if !prog.is_empty() => {
                let c = rng.below(prog.len() as u64) as usize;
                let tys = CALLS[prog[c].call as usize].args;
                if !tys.is_empty() {
                    let a = rng.below(tys.len() as u64) as usize;
                    prog[c].args[a] = gen_arg(rng, tys[a]);
                }
            }
            4 if prog.len() < MAX_CALLS => {
                let at = rng.below(prog.len() as u64 + 1) as usize;
                prog.insert(at, gen_call(rng));
            }
            5 if prog.len() > 1 => {
                prog.remove(rng.below(prog.len() as u64) as usize);
            }
            6 if !prog.is_empty() && prog.len() < MAX_CALLS => {
                let c = rng.below(prog.len() as u64) as usize;
                let copy = prog[c].clone();
                prog.insert(c + 1, copy);
            }
            _ if !other.is_empty() => {
                let from = rng.below(other.len() as u64) as usize;
                let take = 1 + rng.below((other.len() - from) as u64) as usize;
                let at = rng.below(prog.len() as u64 + 1) as usize;
                for (i, c) in other[from..from + take].iter().enumerate() {
                    if prog.len() >= MAX_CALLS {
                        break;
                    }
                    prog.insert(at + i, c.clone());
                }
            }
            _ => prog.push(gen_call(rng)),
        }
    }
}

pub fn encode_call(out: &mut String, c: &Call) {
    let _ = write!(out, "{}", CALLS[c.call as usize].name);
    for (i, a) in c.args.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        let _ = match *a {
            Arg::Imm(v) => write!(out, "i{v:x}"),
            Arg::Res(k, n) => write!(out, "r{k}.{n}"),
            Arg::Buf(r, off) => write!(out, "b{r}.{off:x}"),
            Arg::Path(p) => write!(out, "p{p}"),
            Arg::Iov(n, l, bad) => write!(out, "v{n}.{l:x}.{bad}"),
        };
    }
}

/// `prog` as one line, calls separated by `;`.
pub fn encode(prog: &Prog) -> String {
    let mut out = String::new();
    for (i, c) in prog.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        encode_call(&mut out, c);
    }
    out
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

fn dec<T: core::str::FromStr>(s: &str) -> Option<T> {
    s.parse().ok()
}

fn decode_arg(s: &str) -> Option<Arg> {
    let (tag, rest) = s.split_at_checked(1)?;
    let mut parts = rest.split('.');
    let mut next = || parts.next();
    Some(match tag {
        "i" => Arg::Imm(hex(next()?)?),
        "r" => Arg::Res(dec(next()?)?, dec(next()?)?),
        "b" => Arg::Buf(dec(next()?)?, hex(next()?)? as u32),
        "p" => Arg::Path(dec(next()?)?),
        "v" => Arg::Iov(dec(next()?)?, hex(next()?)? as u32, dec(next()?)?),
        _ => return None,
    })
}

/// Parses calls separated by `;` or newlines; blank lines and `#` comments (a reproducer's
/// header) are skipped. None if a call is malformed or unknown.
pub fn decode(text: &str) -> Option<Prog> {
    let mut prog = Vec::new();
    for item in text.split(['\n', ';']) {
        let item = item.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        let (name, args) = item.split_once(' ').unwrap_or((item, ""));
        let call = super::table::by_name(name)? as u16;
        let args: Vec<Arg> = if args.is_empty() {
            Vec::new()
        } else {
            args.split(',').map(decode_arg).collect::<Option<_>>()?
        };
        if args.len() != CALLS[call as usize].args.len() {
            return None;
        }
        prog.push(Call { call, args });
    }
    Some(prog)
}
