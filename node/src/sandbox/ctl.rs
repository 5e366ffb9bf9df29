//! The control channel between a node and a sandbox's supervisor, without any path.
//!
//! Before bubblewrap starts, the node makes a socketpair and hands one end to the sandbox as an
//! inherited descriptor ([`CTL_FD`]); the sandbox's filesystem holds no socket at all. Every
//! connection (an exec, a port connection, a ping) is a fresh socketpair made by the node, one
//! end of which travels over the control channel (`SCM_RIGHTS`). So the node only ever talks
//! to the sandbox it started, whatever a process inside creates, renames or links: there is
//! nothing to follow. The supervisor marks the channel close-on-exec and itself non-dumpable,
//! so commands it runs cannot take it over; and the node bounds what comes back anyway
//! (`runtime`), because it does not trust the supervisor either.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The descriptor number of the control channel inside the sandbox.
pub const CTL_FD: RawFd = 3;

/// Sends `fd` over the Unix socket `sock` (one byte of payload, one descriptor). Never blocks:
/// a supervisor that does not take its connections gets `WouldBlock`, not a stuck node.
pub fn send_fd(sock: &UnixStream, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; every pointer below points into live buffers of the sizes
    // given, and the control buffer is aligned (u64) and CMSG_SPACE(one fd) long.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        let n = libc::sendmsg(
            sock.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one descriptor from `sock` (close-on-exec). `Ok(None)`: the other end closed.
/// A message without a descriptor is skipped (`WouldBlock` if nothing else is queued).
pub fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    loop {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // Room for a few descriptors: extra ones (a confused sender) are closed, not leaked.
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(4 * std::mem::size_of::<RawFd>() as u32) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        // SAFETY: as in `send_fd`; the kernel writes at most `msg_controllen` bytes of control
        // data, and each descriptor read is within the cmsg's own length.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(None);
            }
            let mut got = Vec::new();
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        got.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            if let Some(first) = got.into_iter().next() {
                return Ok(Some(first));
            }
        }
    }
}

/// A new connection to the supervisor at the other end of `ctl`: the node's end of a fresh
/// socketpair whose other end was sent over `ctl`.
pub fn open(ctl: &UnixStream) -> io::Result<tokio::net::UnixStream> {
    let (mine, theirs) = UnixStream::pair()?;
    send_fd(ctl, theirs.as_raw_fd()).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::other("the sandbox's supervisor is not taking connections")
        } else {
            e
        }
    })?;
    drop(theirs);
    mine.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(mine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn a_descriptor_travels_and_carries_bytes() {
        let (node, sup) = UnixStream::pair().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        send_fd(&node, b.as_raw_fd()).unwrap();
        drop(b);
        let got = recv_fd(sup.as_raw_fd()).unwrap().expect("a descriptor");
        let mut b = UnixStream::from(got);
        a.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        // Nothing queued: WouldBlock, not a hang; the node's end closed: None.
        assert_eq!(
            recv_fd(sup.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(node);
        assert!(recv_fd(sup.as_raw_fd()).unwrap().is_none());
    }

    #[test]
    fn bytes_without_a_descriptor_are_skipped() {
        let (mut node, sup) = UnixStream::pair().unwrap();
        node.write_all(b"xyz").unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        send_fd(&node, b.as_raw_fd()).unwrap();
        assert!(recv_fd(sup.as_raw_fd()).unwrap().is_some());
    }
}
