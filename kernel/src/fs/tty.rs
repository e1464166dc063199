//! The terminal on the serial console: Linux's N_TTY line discipline in small, with one
//! terminal. Input bytes are taken from the UART on each timer tick ([`on_tick`]) and go through
//! [`Tty::receive`]: `ICRNL`/`INLCR`/`IGNCR`, the signal characters (`ISIG`: ^C SIGINT, ^\
//! SIGQUIT, ^Z SIGTSTP to the foreground process group), canonical editing (`ICANON`: erase,
//! kill-line, word erase, EOF) and echo. Readers take completed lines (canonical) or bytes
//! (raw, `VMIN`/`VTIME`) from the read queue; output gets `OPOST`/`ONLCR`.
//!
//! Job control: the terminal belongs to at most one session (its controlling terminal) and has
//! a foreground process group; a read from a background group of that session gets SIGTTIN, a
//! write with `TOSTOP` or a termios change from one gets SIGTTOU (Linux `tty_check_change`),
//! unless the caller ignores or blocks the signal.
#![deny(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use spin::Mutex;

use crate::errno::Errno;
use crate::proc::{self, Pid};

/// A termios field set (the kernel's `struct termios`, 36 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; 19],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Winsize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

// c_iflag, c_oflag, c_lflag bits and c_cc indices (asm-generic/termbits.h).
pub const IGNCR: u32 = 0o200;
pub const INLCR: u32 = 0o100;
pub const ICRNL: u32 = 0o400;
pub const IXON: u32 = 0o2000;
pub const OPOST: u32 = 0o1;
pub const ONLCR: u32 = 0o4;
pub const ISIG: u32 = 0o1;
pub const ICANON: u32 = 0o2;
pub const ECHO: u32 = 0o10;
pub const ECHOE: u32 = 0o20;
pub const ECHOK: u32 = 0o40;
pub const ECHONL: u32 = 0o100;
pub const NOFLSH: u32 = 0o200;
pub const TOSTOP: u32 = 0o400;
pub const ECHOCTL: u32 = 0o1000;
pub const ECHOKE: u32 = 0o4000;
pub const IEXTEN: u32 = 0o100000;
pub const VINTR: usize = 0;
pub const VQUIT: usize = 1;
pub const VERASE: usize = 2;
pub const VKILL: usize = 3;
pub const VEOF: usize = 4;
pub const VTIME: usize = 5;
pub const VMIN: usize = 6;
pub const VSUSP: usize = 10;
pub const VEOL: usize = 11;
pub const VWERASE: usize = 14;
pub const VLNEXT: usize = 15;
pub const VEOL2: usize = 16;

const SIGINT: u8 = 2;
const SIGQUIT: u8 = 3;
const SIGTSTP: u8 = 20;
const SIGTTIN: u8 = 21;
const SIGTTOU: u8 = 22;

/// Linux's `tty_std_termios` with `ECHOE`/`ECHOK`/`ECHOCTL`/`ECHOKE` as a console has them.
pub fn default_termios() -> Termios {
    let mut cc = [0u8; 19];
    cc[VINTR] = 0x03;
    cc[VQUIT] = 0x1c;
    cc[VERASE] = 0x7f;
    cc[VKILL] = 0x15;
    cc[VEOF] = 0x04;
    cc[VMIN] = 1;
    cc[8] = 0x11; // VSTART
    cc[9] = 0x13; // VSTOP
    cc[VSUSP] = 0x1a;
    cc[12] = 0x12; // VREPRINT
    cc[13] = 0x0f; // VDISCARD
    cc[VWERASE] = 0x17;
    cc[VLNEXT] = 0x16;
    Termios {
        iflag: ICRNL | IXON,
        oflag: OPOST | ONLCR,
        cflag: 0o2277, // B38400 | CS8 | CREAD | HUPCL
        lflag: ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN,
        line: 0,
        cc,
    }
}

/// The read queue's end-of-file mark (^D in canonical mode): not a byte.
const EOF_MARK: u16 = 0x100;
/// Input beyond this is dropped (Linux `N_TTY_BUF_SIZE`), as with a full terminal buffer.
const MAX_INPUT: usize = 4096;

pub struct Tty {
    pub termios: Termios,
    pub winsize: Winsize,
    /// The session whose controlling terminal this is (0: none).
    pub session: Pid,
    /// The foreground process group (0: none).
    pub fgpgrp: Pid,
    /// The line being edited (canonical mode).
    line: Vec<u8>,
    /// What readers get: bytes, and [`EOF_MARK`]s.
    queue: VecDeque<u16>,
    /// Completed lines (or EOF marks) in `queue`, for canonical reads.
    lines: usize,
    /// The next byte is taken literally (^V).
    lnext: bool,
    /// Signals for the foreground group that could not be sent yet (the task table was busy).
    pending_signals: u64,
    /// Echo and output bytes produced in the tick, printed once the lock is dropped.
    echo: Vec<u8>,
    /// A reader holds the read lock ([`ReadLock`]).
    reading: bool,
}

pub static TTY: Mutex<Tty> = Mutex::new(Tty {
    termios: Termios {
        iflag: 0,
        oflag: 0,
        cflag: 0,
        lflag: 0,
        line: 0,
        cc: [0; 19],
    },
    winsize: Winsize {
        rows: 24,
        cols: 80,
        xpixel: 0,
        ypixel: 0,
    },
    session: 0,
    fgpgrp: 0,
    line: Vec::new(),
    queue: VecDeque::new(),
    lines: 0,
    lnext: false,
    pending_signals: 0,
    echo: Vec::new(),
    reading: false,
});

/// The wait channel of readers (and pollers) of the terminal.
pub const READ_CHANNEL: usize = 0x7_0000_0000;

/// Sets the terminal up at boot: default termios, the controlling terminal of init's session
/// (`sid`), whose group is in the foreground.
pub fn init(sid: Pid) {
    let mut t = TTY.lock();
    t.termios = default_termios();
    t.session = sid;
    t.fgpgrp = sid;
}

impl Tty {
    fn canonical(&self) -> bool {
        self.termios.lflag & ICANON != 0
    }

    /// Echoes `b` as N_TTY does: control characters as `^X` under `ECHOCTL` (except tab and
    /// newline).
    fn echo_char(&mut self, b: u8) {
        if self.termios.lflag & ECHO == 0 {
            return;
        }
        if self.termios.lflag & ECHOCTL != 0 && (b < 0x20 || b == 0x7f) && b != b'\t' && b != b'\n'
        {
            self.echo_byte(b'^');
            self.echo_byte(b ^ 0x40);
        } else {
            self.echo_byte(b);
        }
    }

    /// One byte of echo, dropped if the heap has no room for it (see [`Tty::put`]).
    fn echo_byte(&mut self, b: u8) {
        if self.echo.try_reserve(1).is_ok() {
            self.echo.push(b);
        }
    }

    /// Erases the last character of the line being edited (`ECHOE`: backspace-space-backspace).
    fn erase_one(&mut self) -> bool {
        let Some(b) = self.line.pop() else {
            return false;
        };
        if self.termios.lflag & ECHO != 0 && self.termios.lflag & ECHOE != 0 {
            let width = if self.termios.lflag & ECHOCTL != 0 && (b < 0x20 || b == 0x7f) {
                2
            } else {
                1
            };
            for _ in 0..width {
                self.echo.extend_from_slice(b"\x08 \x08");
            }
        }
        true
    }

    /// One input byte through the line discipline (Linux `n_tty_receive_char`).
    pub fn receive(&mut self, mut b: u8) {
        let t = self.termios;
        if self.lnext {
            self.lnext = false;
            self.put(b);
            return;
        }
        if b == b'\r' {
            if t.iflag & IGNCR != 0 {
                return;
            }
            if t.iflag & ICRNL != 0 {
                b = b'\n';
            }
        } else if b == b'\n' && t.iflag & INLCR != 0 {
            b = b'\r';
        }
        if t.lflag & ISIG != 0 {
            let signal = match b {
                _ if b == t.cc[VINTR] && b != 0 => Some(SIGINT),
                _ if b == t.cc[VQUIT] && b != 0 => Some(SIGQUIT),
                _ if b == t.cc[VSUSP] && b != 0 => Some(SIGTSTP),
                _ => None,
            };
            if let Some(signal) = signal {
                if t.lflag & NOFLSH == 0 {
                    self.flush_input();
                }
                self.echo_char(b);
                self.pending_signals |= 1 << (signal - 1);
                return;
            }
        }
        if t.lflag & ICANON != 0 {
            if t.lflag & IEXTEN != 0 && b == t.cc[VLNEXT] && b != 0 {
                self.lnext = true;
                return;
            }
            if b == t.cc[VERASE] && b != 0 {
                self.erase_one();
                return;
            }
            if t.lflag & IEXTEN != 0 && b == t.cc[VWERASE] && b != 0 {
                while self.line.last() == Some(&b' ') {
                    self.erase_one();
                }
                while self.line.last().is_some_and(|&c| c != b' ') {
                    self.erase_one();
                }
                return;
            }
            if b == t.cc[VKILL] && b != 0 {
                if t.lflag & ECHOKE != 0 || t.lflag & ECHOE != 0 {
                    while self.erase_one() {}
                } else {
                    self.line.clear();
                    if t.lflag & ECHOK != 0 && t.lflag & ECHO != 0 {
                        self.echo_byte(b'\n');
                    }
                }
                return;
            }
            if b == t.cc[VEOF] && b != 0 {
                self.end_line(true);
                return;
            }
            if b == b'\n' || (b == t.cc[VEOL] && b != 0) || (b == t.cc[VEOL2] && b != 0) {
                if t.lflag & ECHO != 0 || (b == b'\n' && t.lflag & ECHONL != 0) {
                    self.echo_byte(b);
                }
                if self.line.try_reserve(1).is_ok() {
                    self.line.push(b);
                }
                self.end_line(false);
                return;
            }
        }
        self.put(b);
    }

    /// A byte into the line (canonical) or straight to readers (raw), echoed. A byte that
    /// finds no room is dropped, as at `MAX_INPUT` (Linux's `n_tty` buffer is fixed; here the
    /// line and the queue grow on the heap, and a short heap must not panic the input path,
    /// which `TIOCSTI` lets any program drive).
    fn put(&mut self, b: u8) {
        self.echo_char(b);
        if self.canonical() {
            if self.line.len() < MAX_INPUT - 1 && self.line.try_reserve(1).is_ok() {
                self.line.push(b);
            }
        } else if self.queue.len() < MAX_INPUT && self.queue.try_reserve(1).is_ok() {
            self.queue.push_back(u16::from(b));
        }
    }

    /// Completes the line being edited; `eof`: ended by ^D (an empty one reads as end of file).
    fn end_line(&mut self, eof: bool) {
        let line = core::mem::take(&mut self.line);
        if self.queue.len() + line.len() + 1 > MAX_INPUT
            || self.queue.try_reserve(line.len() + 1).is_err()
        {
            return;
        }
        self.queue.extend(line.iter().map(|&b| u16::from(b)));
        if eof {
            self.queue.push_back(EOF_MARK);
        }
        self.lines += 1;
    }

    fn flush_input(&mut self) {
        self.line.clear();
        self.queue.clear();
        self.lines = 0;
    }

    /// Whether a read would not wait (Linux `input_available_p`).
    pub fn readable(&self) -> bool {
        if self.canonical() {
            self.lines > 0
        } else {
            let min = usize::from(self.termios.cc[VMIN]).max(1);
            self.queue.len() >= min || (self.termios.cc[VMIN] == 0 && !self.queue.is_empty())
        }
    }

    /// Bytes a read would get now (FIONREAD): whole lines in canonical mode.
    pub fn available(&self) -> usize {
        if self.canonical() {
            let mut n = 0;
            let mut lines = self.lines;
            for &c in &self.queue {
                if lines == 0 {
                    break;
                }
                if c == EOF_MARK {
                    lines -= 1;
                    continue;
                }
                n += 1;
                if c == u16::from(b'\n') {
                    lines -= 1;
                }
            }
            n
        } else {
            self.queue.len()
        }
    }

    /// The bytes a read of `len` would take now, without taking them, and how many queue
    /// entries that is (an EOF mark is an entry and no byte).
    fn peek(&self, len: usize) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut used = 0;
        for &c in &self.queue {
            if out.len() >= len {
                break;
            }
            if c == EOF_MARK {
                if out.is_empty() {
                    used += 1;
                }
                break;
            }
            used += 1;
            out.push(c as u8);
            if self.canonical() && c == u16::from(b'\n') {
                break;
            }
        }
        (out, used)
    }

    /// Removes what a read took: `copied` bytes of the `peeked` ones (`used` entries).
    fn consume(&mut self, peeked: &[u8], used: usize, copied: usize) {
        let whole = copied == peeked.len();
        let entries = if whole { used } else { copied };
        let mut ended_line = false;
        for _ in 0..entries {
            if let Some(c) = self.queue.pop_front() {
                if c == EOF_MARK || c == u16::from(b'\n') {
                    ended_line = true;
                }
            }
        }
        // A canonical read that took a line's end (or an EOF mark) used up one line; one ended
        // by the buffer size leaves the rest of the line for the next read.
        if self.canonical() && ended_line {
            self.lines = self.lines.saturating_sub(1);
        }
        // A line ended by ^D keeps its mark after its bytes: drop it with them.
        if self.canonical()
            && whole
            && !ended_line
            && !peeked.is_empty()
            && self.queue.front() == Some(&EOF_MARK)
        {
            self.queue.pop_front();
            self.lines = self.lines.saturating_sub(1);
        }
    }
}

/// The timer tick's work: take what the UART received through the line discipline. Skips
/// (retries next tick) whatever lock the interrupted code holds.
pub fn on_tick() {
    let Some(mut t) = TTY.try_lock() else {
        return;
    };
    let mut got = false;
    while let Some(b) = crate::serial::try_read_byte_nowait() {
        t.receive(b);
        got = true;
    }
    after_input(t, got);
}

/// TIOCSTI (Linux `tiocsti`): `b` as if typed. Only on the caller's controlling terminal here
/// (Linux also lets `CAP_SYS_ADMIN` push into another terminal; there is only one).
pub fn inject(b: u8) -> Result<(), Errno> {
    if !is_ctty() {
        return Err(Errno::EPERM);
    }
    let mut t = TTY.lock();
    t.receive(b);
    after_input(t, true);
    Ok(())
}

/// After input: echo it, send the signal characters' signals to the foreground group, wake
/// readers.
fn after_input(mut t: spin::MutexGuard<'_, Tty>, got: bool) {
    let echo = core::mem::take(&mut t.echo);
    let signals = t.pending_signals;
    let fg = t.fgpgrp;
    let readable = t.readable();
    if signals != 0 && fg != 0 {
        if proc::signal::try_kill_pgrp_signals(fg, signals) {
            t.pending_signals = 0;
        }
    } else if fg == 0 {
        t.pending_signals = 0;
    }
    drop(t);
    if !echo.is_empty() {
        output_raw(&echo);
    }
    if got && readable {
        proc::wakeup(READ_CHANNEL);
    }
}

/// Writes `data` to the serial port with output processing (`OPOST`/`ONLCR`).
pub fn output(data: &[u8]) {
    let oflag = TTY.lock().termios.oflag;
    if oflag & OPOST != 0 && oflag & ONLCR != 0 {
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' {
                output_raw(&data[start..i]);
                output_raw(b"\r\n");
                start = i + 1;
            }
        }
        output_raw(&data[start..]);
    } else {
        output_raw(data);
    }
}

fn output_raw(data: &[u8]) {
    crate::serial::write_bytes(data);
}

/// Linux `tty_check_change` / `__tty_check_change`: may the caller (in the terminal's session
/// but not its foreground group) change the terminal or write with `TOSTOP`? If not, `signal`
/// goes to its process group and the call restarts after it (`ERESTARTSYS`); a caller that
/// ignores or blocks `signal` may go on.
fn check_background(signal: u8) -> Result<(), Errno> {
    let job = proc::pgrp::current_job();
    let (session, fg) = {
        let t = TTY.lock();
        (t.session, t.fgpgrp)
    };
    if session == 0 || job.sid != session || fg == 0 || job.pgid == fg {
        return Ok(());
    }
    if proc::signal::current_ignores_or_blocks(signal) {
        return if signal == SIGTTIN {
            Err(Errno::EIO)
        } else {
            Ok(())
        };
    }
    // A stop signal to an orphaned group would never be undone: EIO instead.
    if proc::orphan::is_current_pgrp_orphaned() {
        return Err(Errno::EIO);
    }
    let info = proc::signal::SigInfo::from_process(signal, proc::signal::SI_KERNEL, 0);
    let _ = proc::signal::kill_pgrp(job.pgid, info);
    Err(Errno::ERESTARTSYS)
}

/// Where a reader waits for another reader to finish (Linux `atomic_read_lock`).
const READ_LOCK_CHANNEL: usize = READ_CHANNEL + 1;

/// One reader at a time, held across the user copy: the bytes are peeked, copied (which may
/// fault and sleep) and only then consumed, so two readers between peek and consume would both
/// get the same bytes (Linux's per-tty `atomic_read_lock`, a sleeping mutex).
struct ReadLock;

impl ReadLock {
    /// `nonblock`: `EAGAIN` instead of waiting (Linux takes the lock with `mutex_trylock` then).
    fn acquire(nonblock: bool) -> Result<ReadLock, Errno> {
        loop {
            {
                let mut t = TTY.lock();
                if !t.reading {
                    t.reading = true;
                    return Ok(ReadLock);
                }
            }
            if nonblock {
                return Err(Errno::EAGAIN);
            }
            proc::sleep_interruptible(READ_LOCK_CHANNEL)?;
        }
    }
}

impl Drop for ReadLock {
    fn drop(&mut self) {
        TTY.lock().reading = false;
        proc::wakeup(READ_LOCK_CHANNEL);
    }
}

/// A read of at most `len` bytes, handing them to `copy` (which returns how many it could copy
/// to the user; a short copy leaves the rest queued, Linux `copy_from_read_buf`).
pub fn read(
    nonblock: bool,
    len: usize,
    copy: &mut dyn FnMut(&[u8]) -> Result<usize, Errno>,
) -> Result<usize, Errno> {
    check_background(SIGTTIN)?;
    if len == 0 {
        return Ok(0);
    }
    let _reading = ReadLock::acquire(nonblock)?;
    let mut deadline = None;
    // (bytes queued when the inter-byte timer was armed, its end).
    let mut inter_byte: Option<(usize, u64)> = None;
    loop {
        let (peeked, used) = {
            let t = TTY.lock();
            let (min, time) = (t.termios.cc[VMIN], t.termios.cc[VTIME]);
            let span = u64::from(time) * crate::time::TICK_HZ / 10;
            if t.readable() {
                let (p, u) = t.peek(len);
                (Some(p), u)
            } else if !t.canonical() && min == 0 {
                if time == 0 {
                    return Ok(0);
                }
                let end = *deadline.get_or_insert(crate::time::ticks() + span);
                if crate::time::ticks() >= end {
                    return Ok(0);
                }
                (None, 0)
            } else if !t.canonical() && time > 0 && !t.queue.is_empty() {
                // VMIN and VTIME both set (Linux n_tty_read): VTIME is an inter-byte timer,
                // started by the first byte and restarted by each later one; when it runs
                // out the read returns what arrived, fewer than VMIN bytes.
                let now = crate::time::ticks();
                match inter_byte {
                    Some((queued, end)) if queued == t.queue.len() && now >= end => {
                        let (p, u) = t.peek(len);
                        (Some(p), u)
                    }
                    Some((queued, _)) if queued == t.queue.len() => (None, 0),
                    _ => {
                        inter_byte = Some((t.queue.len(), now + span));
                        deadline = Some(now + span);
                        (None, 0)
                    }
                }
            } else {
                (None, 0)
            }
        };
        if let Some(peeked) = peeked {
            let copied = if peeked.is_empty() { 0 } else { copy(&peeked)? };
            TTY.lock().consume(&peeked, used, copied);
            return Ok(copied);
        }
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        match deadline {
            Some(end) => proc::sleep_interruptible_until(READ_CHANNEL, end)?,
            None => proc::sleep_interruptible(READ_CHANNEL)?,
        }
        check_background(SIGTTIN)?;
    }
}

/// A write: `TOSTOP` makes a background writer stop (SIGTTOU).
pub fn write(data: &[u8]) -> Result<usize, Errno> {
    if TTY.lock().termios.lflag & TOSTOP != 0 {
        check_background(SIGTTOU)?;
    }
    output(data);
    Ok(data.len())
}

/// Sets the termios (`TCSETS*`; `flush`: TCSETSF drops pending input). Leaving canonical mode
/// hands the line being edited to readers as raw bytes, as N_TTY does.
pub fn set_termios(new: Termios, flush: bool) -> Result<(), Errno> {
    check_background(SIGTTOU)?;
    let mut t = TTY.lock();
    if flush {
        t.flush_input();
    }
    let was_canonical = t.canonical();
    t.termios = new;
    if was_canonical && !t.canonical() {
        let line = core::mem::take(&mut t.line);
        t.queue.retain(|&c| c != EOF_MARK);
        t.queue.extend(line.iter().map(|&b| u16::from(b)));
        t.lines = 0;
    } else if !was_canonical && t.canonical() {
        // Raw bytes queued become one pending line's worth if they end one.
        t.lines = t.queue.iter().filter(|&&c| c == u16::from(b'\n')).count();
    }
    let readable = t.readable();
    drop(t);
    if readable {
        proc::wakeup(READ_CHANNEL);
    }
    Ok(())
}

/// The device number of the console terminal (`/dev/console`, major 5 minor 1), as `stat`
/// shows it and `/proc/<pid>/stat` encodes `tty_nr` (Linux `new_encode_dev`, the same value for
/// a minor below 256).
pub const CONSOLE_RDEV: u64 = (5 << 8) | 1;

/// For `/proc/<pid>/stat`: the controlling terminal of session `sid` and its foreground group
/// (`tty_nr`, `tpgid`), or `None` when the session has none (Linux prints 0 and -1).
pub fn ctty_of_session(sid: Pid) -> Option<(u64, Pid)> {
    let t = TTY.lock();
    (t.session != 0 && t.session == sid).then_some((CONSOLE_RDEV, t.fgpgrp))
}

/// Whether the caller has a controlling terminal (`/dev/tty` opens it).
pub fn has_ctty() -> bool {
    is_ctty()
}

/// Whether the caller's session has this terminal as its controlling terminal.
fn is_ctty() -> bool {
    let sid = proc::pgrp::current_job().sid;
    let session = TTY.lock().session;
    session != 0 && session == sid
}

/// TIOCGPGRP: `ENOTTY` unless this is the caller's controlling terminal.
pub fn get_pgrp() -> Result<Pid, Errno> {
    if !is_ctty() {
        return Err(Errno::ENOTTY);
    }
    Ok(TTY.lock().fgpgrp)
}

/// TIOCGSID.
pub fn get_sid() -> Result<Pid, Errno> {
    if !is_ctty() {
        return Err(Errno::ENOTTY);
    }
    Ok(TTY.lock().session)
}

/// TIOCSPGRP (Linux `tiocspgrp`): `ENOTTY` unless the caller's controlling terminal, SIGTTOU
/// from the background, `EINVAL` for a negative group, `ESRCH` for no group and no process of
/// that id, `EPERM` for one of another session.
pub fn set_pgrp(pgrp: i32) -> Result<(), Errno> {
    if !is_ctty() {
        return Err(Errno::ENOTTY);
    }
    check_background(SIGTTOU)?;
    if pgrp < 0 {
        return Err(Errno::EINVAL);
    }
    // Linux `session_of_pgrp`: the session of the group's first member, or, for a pid that
    // names no group, of the process with that pid (which Linux accepts as a foreground group).
    let members = proc::pgrp::members(pgrp as Pid);
    let group_sid = match members.first() {
        Some(&first) => proc::pgrp::job_of(first).map(|(j, _)| j.sid),
        None if pgrp == 0 => None,
        None => proc::pgrp::getsid(pgrp).ok(),
    };
    let Some(group_sid) = group_sid else {
        return Err(Errno::ESRCH);
    };
    if group_sid != proc::pgrp::current_job().sid {
        return Err(Errno::EPERM);
    }
    TTY.lock().fgpgrp = pgrp as Pid;
    Ok(())
}

/// TIOCSCTTY (Linux `tiocsctty`): a session leader whose session already has this terminal
/// succeeds; any other caller that is no session leader, or whose session has a terminal, gets
/// `EPERM`; a terminal of another session is taken only with `arg` 1 (stealing: every process
/// is root here).
pub fn set_ctty(steal: bool) -> Result<(), Errno> {
    let job = proc::pgrp::current_job();
    let leader = job.sid == proc::current_pid();
    let mut t = TTY.lock();
    if leader && t.session == job.sid {
        return Ok(());
    }
    if !leader || t.session == job.sid {
        return Err(Errno::EPERM);
    }
    if t.session != 0 && !steal {
        return Err(Errno::EPERM);
    }
    t.session = job.sid;
    t.fgpgrp = job.pgid;
    Ok(())
}

/// TIOCNOTTY: the caller gives up its controlling terminal; a session leader detaches it from
/// the session, sending SIGHUP and SIGCONT to the foreground group (Linux
/// `disassociate_ctty`). With one terminal per session modelled, a non-leader's call only
/// checks.
pub fn notty() -> Result<(), Errno> {
    if !is_ctty() {
        return Err(Errno::ENOTTY);
    }
    let job = proc::pgrp::current_job();
    if job.sid != proc::current_pid() {
        return Ok(());
    }
    disassociate_ctty(job.sid);
    Ok(())
}

/// Session `sid`'s leader gives up its controlling terminal (TIOCNOTTY, or its process's end):
/// the foreground group gets SIGHUP then SIGCONT and the terminal is left without a session
/// or foreground group, free for another session leader (Linux `disassociate_ctty`).
pub fn disassociate_ctty(sid: Pid) {
    let fg = {
        let mut t = TTY.lock();
        if t.session != sid {
            return;
        }
        let fg = t.fgpgrp;
        t.session = 0;
        t.fgpgrp = 0;
        fg
    };
    if fg != 0 {
        for signal in [1u8, 18] {
            let info = proc::signal::SigInfo::from_process(signal, proc::signal::SI_KERNEL, 0);
            let _ = proc::signal::kill_pgrp(fg, info);
        }
    }
}

pub fn termios() -> Termios {
    TTY.lock().termios
}

pub fn winsize() -> Winsize {
    TTY.lock().winsize
}

/// TIOCSWINSZ: a change sends SIGWINCH to the foreground group (Linux `tty_do_resize`).
pub fn set_winsize(w: Winsize) {
    let (changed, fg) = {
        let mut t = TTY.lock();
        let old = t.winsize;
        t.winsize = w;
        (
            (old.rows, old.cols, old.xpixel, old.ypixel) != (w.rows, w.cols, w.xpixel, w.ypixel),
            t.fgpgrp,
        )
    };
    if changed && fg != 0 {
        let info = proc::signal::SigInfo::from_process(28, proc::signal::SI_KERNEL, 0);
        let _ = proc::signal::kill_pgrp(fg, info);
    }
}

pub fn available() -> usize {
    TTY.lock().available()
}

pub fn readable() -> bool {
    TTY.lock().readable()
}

/// TCFLSH: 0 input, 1 output (nothing is buffered), 2 both.
pub fn flush(which: u64) -> Result<(), Errno> {
    match which {
        0 | 2 => TTY.lock().flush_input(),
        1 => {}
        _ => return Err(Errno::EINVAL),
    }
    Ok(())
}
