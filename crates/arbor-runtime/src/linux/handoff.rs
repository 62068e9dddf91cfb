//! Passing one descriptor with a short message over a unix socket
//! (`SCM_RIGHTS`): how the seccomp listener travels from the sandbox's PID 1
//! to `arbor-launch`, and from there, with envd's pid, to the driver.

use crate::error::{Error, Result};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

/// Sends `data` and, if given, a copy of `fd` over the socket `sock`.
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> =
        if fds.is_empty() { Vec::new() } else { vec![ControlMessage::ScmRights(&fds)] };
    sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(data)], &cmsgs, MsgFlags::empty(), None)
        .map_err(Error::sys("sending a descriptor"))?;
    Ok(())
}

/// Receives one message of at most 64 bytes and the descriptor sent with
/// it, if any; `MSG_DONTWAIT` when `wait` is false.
pub fn recv(sock: BorrowedFd<'_>, wait: bool) -> Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let flags = if wait { MsgFlags::MSG_CMSG_CLOEXEC } else { MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT };
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags)
        .map_err(Error::sys("receiving a descriptor"))?;
    let mut fd = None;
    for cmsg in msg.cmsgs().map_err(Error::sys("reading control messages"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed `raw` in this process; nobody else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let len = msg.bytes;
    Ok((buf[..len].to_vec(), fd))
}
