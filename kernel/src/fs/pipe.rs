//! Pipes: a bounded byte buffer between a read end and a write end.
//!
//! Model (Linux `pipe(7)`): a reader blocks while the buffer is empty and a writer exists; with
//! no writer left it reads EOF (0). A writer blocks while the buffer is full and a reader exists;
//! with no reader left it gets `EPIPE` and SIGPIPE. The counts of open read and write ends are
//! kept by the open-file descriptions (`fs::OpenFile`), which bump them when created and drop
//! them when the last descriptor sharing them closes. Sleepers wait on the pipe's address as the
//! wait channel (`proc::sleep`), and every state change wakes that channel. With `O_NONBLOCK`
//! the calls answer `EAGAIN` instead of sleeping.

use alloc::collections::VecDeque;

use spin::Mutex;

use crate::proc;
use crate::syscall::Errno;

/// Linux's default pipe capacity.
pub const CAPACITY: usize = 65536;

#[derive(Default)]
struct State {
    buf: VecDeque<u8>,
    readers: usize,
    writers: usize,
}

#[derive(Default)]
pub struct Pipe {
    state: Mutex<State>,
}

impl Pipe {
    fn channel(&self) -> usize {
        self as *const Pipe as usize
    }

    pub fn add_end(&self, write: bool) {
        let mut state = self.state.lock();
        if write {
            state.writers += 1;
        } else {
            state.readers += 1;
        }
    }

    pub fn drop_end(&self, write: bool) {
        {
            let mut state = self.state.lock();
            if write {
                state.writers -= 1;
            } else {
                state.readers -= 1;
            }
        }
        proc::wakeup(self.channel());
    }

    /// Reads into `out` (via `copy`, which moves bytes to the user); blocks while empty.
    pub fn read(
        &self,
        nonblock: bool,
        len: usize,
        copy: &mut dyn FnMut(&[u8]) -> Result<(), Errno>,
    ) -> Result<usize, Errno> {
        if len == 0 {
            return Ok(0);
        }
        loop {
            let chunk: Option<alloc::vec::Vec<u8>> = {
                let mut state = self.state.lock();
                if state.buf.is_empty() {
                    if state.writers == 0 {
                        return Ok(0);
                    }
                    None
                } else {
                    let n = len.min(state.buf.len());
                    Some(state.buf.drain(..n).collect())
                }
            };
            let Some(chunk) = chunk else {
                if nonblock {
                    return Err(Errno::EAGAIN);
                }
                proc::sleep(self.channel())?;
                continue;
            };
            proc::wakeup(self.channel());
            copy(&chunk)?;
            return Ok(chunk.len());
        }
    }

    /// Writes all of `data`, blocking while full; `EPIPE` once no reader is left.
    pub fn write(&self, nonblock: bool, data: &[u8]) -> Result<usize, Errno> {
        let mut done = 0;
        while done < data.len() || data.is_empty() {
            {
                let mut state = self.state.lock();
                if state.readers == 0 {
                    drop(state);
                    proc::send_signal_current(proc::SIGPIPE);
                    return if done > 0 {
                        Ok(done)
                    } else {
                        Err(Errno::EPIPE)
                    };
                }
                if data.is_empty() {
                    return Ok(0);
                }
                let room = CAPACITY - state.buf.len();
                let n = room.min(data.len() - done);
                state.buf.extend(&data[done..done + n]);
                done += n;
            }
            proc::wakeup(self.channel());
            if done < data.len() {
                if nonblock {
                    return if done > 0 {
                        Ok(done)
                    } else {
                        Err(Errno::EAGAIN)
                    };
                }
                proc::sleep(self.channel())?;
            }
        }
        Ok(done)
    }
}
