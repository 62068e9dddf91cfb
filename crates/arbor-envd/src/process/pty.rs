//! Pseudo-terminals for `pty` processes: the master side, driven by tokio.

use nix::pty::{openpty, Winsize};
use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
};
use tokio::io::{unix::AsyncFd, Interest};

/// The master side of a process's terminal.
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }
}

impl PtyMaster {
    /// Opens a terminal of `cols` × `rows`; returns the master and the slave
    /// (which becomes the child's stdin, stdout and stderr).
    pub fn open(cols: u16, rows: u16) -> io::Result<(Self, OwnedFd)> {
        let pair = openpty(Some(&winsize(cols, rows)), None).map_err(io::Error::from)?;
        let master = pair.master;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .map_err(io::Error::from)?;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(io::Error::from)?;
        // SAFETY: `master` is an open OwnedFd that the AsyncFd takes
        // ownership of, so it stays open and unchanged for its lifetime.
        let fd = unsafe { AsyncFd::register_with_interest(master, Interest::READABLE | Interest::WRITABLE) }
            .map_err(io::Error::from)?;
        Ok((Self { fd }, pair.slave))
    }

    /// Reads terminal output. `Ok(0)` once every slave end is closed (Linux
    /// reports that as EIO).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: the buffer is valid for `buf.len()` bytes and the
                // fd is open for the lifetime of `self`.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            match res {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as terminal input.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                // SAFETY: `data` is valid for `data.len()` bytes; the fd is open.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Changes the terminal size; the foreground process gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one `Winsize` from the pointer, which
        // points at a live local.
        let rc = unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
