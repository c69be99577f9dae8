//! The few system calls memif's control plane needs: UNIX seqpacket sockets with descriptor
//! passing (SCM_RIGHTS), eventfds, poll and file seals, all through rustix's safe wrappers
//! (no `unsafe` here: descriptors are `OwnedFd`/`BorrowedFd`, control messages are built and
//! parsed by rustix). None of this runs on the data path except [`eventfd_signal`]. Public
//! (hidden) only so integration tests can drive a control socket by hand.

#![forbid(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::SealFlags;
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use super::msg::MSG_SIZE;

/// Most descriptors one control message may carry. memif passes at most one; room for a few
/// more lets us tell "too many" (closed, the message still read) from a peer that floods the
/// ancillary data (`MSG_CTRUNC`: refused).
const MAX_FDS: usize = 4;

/// Longest socket path (`sun_path` is 108 bytes, one kept for the NUL).
const MAX_PATH: usize = 107;

/// The socket address for `path`. A path starting with `@` names a socket in Linux's
/// abstract namespace (DPDK 22.11's default, `socket-abstract=yes`): `@/run/x.sock` is the
/// abstract name `"\0/run/x.sock"`, with the address length ending at the name as DPDK does.
fn sockaddr(path: &Path) -> io::Result<SocketAddrUnix> {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.is_empty() || bytes.len() > MAX_PATH || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path empty, too long (107 bytes max) or containing NUL",
        ));
    }
    let addr = if is_abstract(path) {
        SocketAddrUnix::new_abstract_name(&bytes[1..])
    } else {
        SocketAddrUnix::new(path)
    };
    Ok(addr?)
}

/// True when `path` names an abstract-namespace socket (`@name`): no file in the filesystem.
pub fn is_abstract(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().first() == Some(&b'@')
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// A listening seqpacket socket bound at `path` (non-blocking). A stale socket left by a dead
/// process is removed first; anything else at `path` (a live listener, a file that is not a
/// socket) is an error.
#[cfg(test)]
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    listen_backlog(path, 16)
}

/// [`listen`] with room for `backlog` connections not yet accepted (clients that connect at
/// once; one more is refused with `EAGAIN` and retries).
pub fn listen_backlog(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let addr = sockaddr(path)?;
    let file = if is_abstract(path) {
        None
    } else {
        std::fs::symlink_metadata(path).ok()
    };
    if let Some(meta) = file {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            ));
        }
        // A live listener answers connect(); a stale socket refuses it. Only remove stale ones.
        if connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process listens on this memif socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(fd)
}

/// Connect to the seqpacket socket at `path` (the returned socket is non-blocking). A
/// UNIX-domain connect completes (or fails) at once even on a non-blocking socket, except
/// `EAGAIN` when the listener's backlog is full, which the caller treats as a failed attempt.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    rustix::net::connect(&fd, &sockaddr(path)?)?;
    Ok(fd)
}

/// Accept one pending connection; `Ok(None)` when there is none.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Send one control message, with `fd` attached by SCM_RIGHTS when given.
pub fn send_msg(
    sock: BorrowedFd<'_>,
    msg: &[u8; MSG_SIZE],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ctl = SendAncillaryBuffer::new(&mut space);
    let fds: [BorrowedFd<'_>; 1];
    if let Some(fd) = fd {
        fds = [fd];
        let pushed = ctl.push(SendAncillaryMessage::ScmRights(&fds));
        debug_assert!(pushed, "control buffer sized for one descriptor");
    }
    let n = rustix::net::sendmsg(
        sock,
        &[io::IoSlice::new(msg)],
        &mut ctl,
        SendFlags::NOSIGNAL,
    )?;
    if n != MSG_SIZE {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// What one `recvmsg` brought.
pub enum Recv {
    /// Nothing pending.
    WouldBlock,
    /// The peer closed the connection.
    Closed,
    /// One datagram: its length (possibly not 128: the caller refuses it), whether it or its
    /// ancillary data was truncated, and the first descriptor passed with it (extra
    /// descriptors are closed).
    Msg {
        /// Bytes received.
        len: usize,
        /// The datagram did not fit in a control message (`MSG_TRUNC`).
        truncated: bool,
        /// The peer passed more ancillary data (descriptors) than a control message may carry
        /// and the kernel cut it (`MSG_CTRUNC`); `fd` is then `None`, every descriptor that
        /// did arrive closed. The caller refuses the message.
        ctl_truncated: bool,
        /// The first descriptor passed.
        fd: Option<OwnedFd>,
    },
}

/// Receive one control datagram into `buf`.
///
/// Every descriptor the peer passed becomes an `OwnedFd` here; all but the first are closed
/// before this returns, so a peer cannot make us leak descriptors by attaching extras.
pub fn recv_msg(sock: BorrowedFd<'_>, buf: &mut [u8; MSG_SIZE]) -> io::Result<Recv> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut ctl = RecvAncillaryBuffer::new(&mut space);
    let r = match rustix::net::recvmsg(
        sock,
        &mut [io::IoSliceMut::new(buf)],
        &mut ctl,
        RecvFlags::CMSG_CLOEXEC,
    ) {
        Ok(r) => r,
        Err(Errno::AGAIN) => return Ok(Recv::WouldBlock),
        Err(Errno::CONNRESET) => return Ok(Recv::Closed),
        Err(e) => return Err(e.into()),
    };
    // Take ownership of every passed descriptor first, so none leaks whatever happens next;
    // messages other than SCM_RIGHTS carry no resources and are dropped.
    let mut first = None;
    let mut any = false;
    for m in ctl.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for fd in fds {
                any = true;
                if first.is_none() {
                    first = Some(fd);
                } // else: dropped, closed.
            }
        }
    }
    let ctl_truncated = r.flags.contains(ReturnFlags::CTRUNC);
    if r.bytes == 0 && !any && !ctl_truncated {
        return Ok(Recv::Closed);
    }
    Ok(Recv::Msg {
        len: r.bytes.min(MSG_SIZE),
        truncated: r.flags.contains(ReturnFlags::TRUNC),
        ctl_truncated,
        fd: if ctl_truncated { None } else { first },
    })
}

/// A non-blocking eventfd (memif's per-ring interrupt line: the protocol passes one per ring;
/// a consumer that sleeps, the peer's or ours when idle, waits on it).
pub fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC,
    )?)
}

/// Signal an eventfd; false when the write did not happen. Every eventfd written on the
/// data path is non-blocking (ours are made so; a peer's is set so by [`interrupt_fd`]), so a
/// counter the peer left full (`EAGAIN`) is a skipped signal, never a stall; the caller
/// counts it. A closed peer or any other error is not our problem either.
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> bool {
    matches!(rustix::io::write(fd, &1u64.to_ne_bytes()), Ok(8))
}

/// What a peer passed as a ring's interrupt descriptor, if it is not an eventfd.
#[derive(Debug)]
pub enum NotEventfd {
    /// `/proc/self/fd/N` names something else (`pipe:[123]`, `/dev/null`, `socket:[..]`).
    Kind(String),
    /// A system call on it failed.
    Os(io::Error),
}

/// Check that `fd`, a ring interrupt descriptor a peer passed, is an eventfd, and make it
/// non-blocking, so that signalling it from the data path can never block (a pipe nobody
/// reads, or an eventfd whose counter the peer preloaded to `u64::MAX - 1`, would stall a
/// blocking write forever).
///
/// The check reads the link `/proc/self/fd/N`: the kernel names an eventfd
/// `anon_inode:[eventfd]` (the name `eventfd_file_create` gives it, stable since eventfds
/// exist). `fstat` alone cannot tell: every anonymous-inode descriptor (eventfd, timerfd,
/// signalfd, epoll) shares one inode, and its `st_mode` type bits changed across kernel
/// versions. Without procfs (a sandbox) we fall back to that `fstat` check: the same
/// anonymous inode as an eventfd of our own; the other anonymous-inode kinds refuse an
/// 8-byte write (`EINVAL`) rather than block, and `O_NONBLOCK` is set on all of them anyway.
///
/// `O_NONBLOCK` is a file status flag, shared with the peer's descriptor: the peer then
/// reads its eventfd without blocking too, which is how memif peers open them anyway (DPDK,
/// libmemif and VPP create them with `EFD_NONBLOCK` and wait in epoll).
pub fn interrupt_fd(fd: BorrowedFd<'_>) -> Result<(), NotEventfd> {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::read_link(&link) {
        Ok(target) => {
            if target.as_os_str() != "anon_inode:[eventfd]" {
                return Err(NotEventfd::Kind(target.to_string_lossy().into_owned()));
            }
        }
        Err(_) => {
            let ours = eventfd().map_err(NotEventfd::Os)?;
            let a = rustix::fs::fstat(fd).map_err(|e| NotEventfd::Os(e.into()))?;
            let b = rustix::fs::fstat(&ours).map_err(|e| NotEventfd::Os(e.into()))?;
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
                return Err(NotEventfd::Kind(format!("mode {:#o}", a.st_mode)));
            }
        }
    }
    let fl = rustix::fs::fcntl_getfl(fd).map_err(|e| NotEventfd::Os(e.into()))?;
    rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| NotEventfd::Os(e.into()))?;
    Ok(())
}

/// The user id of the process at the other end of a UNIX socket (`SO_PEERCRED`: as it was
/// when it connected).
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(sock)?.uid.as_raw())
}

/// Drain an eventfd.
pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut v = [0u8; 8];
    let _ = rustix::io::read(fd, &mut v);
}

/// Size of the file behind `fd` (to check a peer's region before mapping it: mapping past
/// the end of a file would fault on access).
pub fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = rustix::fs::fstat(fd)?;
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// True when the file behind `fd` is sealed against shrinking (`F_SEAL_SHRINK`), so the peer
/// that passed it cannot truncate it under our mapping (which would fault on access). False
/// for files that do not support seals (hugetlbfs files on old kernels, plain files).
pub fn shrink_sealed(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(SealFlags::SHRINK))
}

/// Wait until one of `fds` is readable (or hung up), or `timeout` passes; `ready[i]` says
/// whether `fds[i]` has anything to report (`ready` is cleared and refilled). An interrupted
/// wait reports nothing ready.
pub fn poll(fds: &[BorrowedFd<'_>], ready: &mut Vec<bool>, timeout: Duration) -> io::Result<()> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(fd.as_fd(), PollFlags::IN))
        .collect();
    let ts = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    ready.clear();
    match rustix::event::poll(&mut pfds, Some(&ts)) {
        Ok(_) => {
            ready.extend(pfds.iter().map(|p| !p.revents().is_empty()));
            Ok(())
        }
        Err(Errno::INTR) => {
            ready.resize(fds.len(), false);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
