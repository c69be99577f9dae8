//! The few system calls memif's control plane needs: UNIX seqpacket sockets with descriptor
//! passing (SCM_RIGHTS), eventfds and poll. Every raw call goes through `cvt`. None of this
//! runs on the data path. Public (hidden) only so integration tests can drive a control
//! socket by hand.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::msg::MSG_SIZE;

/// Turn a -1 return into the errno.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The socket address for `path`. A path starting with `@` names a socket in Linux's
/// abstract namespace (DPDK 22.11's default, `socket-abstract=yes`): `@/run/x.sock` is the
/// abstract name `"\0/run/x.sock"`, with the address length ending at the name as DPDK does.
fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path empty, too long (107 bytes max) or containing NUL",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    if is_abstract(path) {
        addr.sun_path[0] = 0;
        let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len();
        return Ok((addr, len as libc::socklen_t));
    }
    Ok((
        addr,
        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
    ))
}

/// True when `path` names an abstract-namespace socket (`@name`): no file in the filesystem.
pub fn is_abstract(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().first() == Some(&b'@')
}

fn seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is a fresh descriptor we own.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: fd was just returned by socket() and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listening seqpacket socket bound at `path` (non-blocking). A stale socket left by a dead
/// process is removed first; anything else at `path` (a live listener, a file that is not a
/// socket) is an error.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let (addr, len) = sockaddr(path)?;
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
    // SAFETY: addr is a valid sockaddr_un of `len` bytes; fd is ours.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    // SAFETY: plain syscall on our descriptor.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 16) })?;
    Ok(fd)
}

/// Connect to the seqpacket socket at `path` (the returned socket is non-blocking).
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes; fd is ours. A UNIX-domain connect
    // completes (or fails) immediately even on a non-blocking socket, except EAGAIN when the
    // listener's backlog is full, which the caller treats as a failed attempt.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    Ok(fd)
}

/// Accept one pending connection; `Ok(None)` when there is none.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    // SAFETY: null address pointers are allowed; the result is a fresh descriptor.
    let r = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    match cvt(r) {
        // SAFETY: accept4 returned a fresh descriptor nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Send one control message, with `fd` attached by SCM_RIGHTS when given.
pub fn send_msg(
    sock: BorrowedFd<'_>,
    msg: &[u8; MSG_SIZE],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: MSG_SIZE,
    };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut ctl = [0u64; 4];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        debug_assert!(space <= std::mem::size_of_val(&ctl));
        mh.msg_control = ctl.as_mut_ptr().cast();
        mh.msg_controllen = space as _;
        // SAFETY: mh points at a control buffer of `space` bytes, enough for one cmsghdr
        // carrying one int, so CMSG_FIRSTHDR is non-null and CMSG_DATA is inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd.as_raw_fd());
        }
    }
    // SAFETY: mh describes valid buffers that live across the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != MSG_SIZE {
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
    /// One datagram: its length (possibly not 128: the caller refuses it), whether it was
    /// truncated, and the first descriptor passed with it (extra descriptors are closed).
    Msg {
        /// Bytes received.
        len: usize,
        /// The datagram or its ancillary data did not fit.
        truncated: bool,
        /// The first descriptor passed.
        fd: Option<OwnedFd>,
    },
}

/// Receive one control datagram into `buf`.
pub fn recv_msg(sock: BorrowedFd<'_>, buf: &mut [u8; MSG_SIZE]) -> io::Result<Recv> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: MSG_SIZE,
    };
    // Room for a few descriptors and credentials; aligned.
    let mut ctl = [0u64; 16];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.as_mut_ptr().cast();
    mh.msg_controllen = std::mem::size_of_val(&ctl) as _;
    // SAFETY: mh describes valid buffers that live across the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(Recv::WouldBlock);
        }
        if e.raw_os_error() == Some(libc::ECONNRESET) {
            return Ok(Recv::Closed);
        }
        return Err(e);
    }
    // Take ownership of every passed descriptor first, so none leaks whatever happens next.
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: the kernel filled mh.msg_control with msg_controllen bytes of well-formed
    // cmsghdrs; CMSG_FIRSTHDR/NXTHDR stay inside it and return null at the end.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let hdr = libc::CMSG_LEN(0) as usize;
                let count = ((*c).cmsg_len as usize).saturating_sub(hdr) / 4;
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i * 4).cast::<RawFd>());
                    if raw >= 0 {
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(Recv::Closed);
    }
    let truncated = mh.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    Ok(Recv::Msg {
        len: n as usize,
        truncated,
        fd: fds.into_iter().next(),
    })
}

/// A non-blocking eventfd (memif's per-ring interrupt line; we poll, but the protocol passes
/// one per ring and a peer in interrupt mode waits on it).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is a fresh descriptor.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Signal an eventfd (best effort: a full counter or a closed peer is not our problem).
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor the caller keeps open.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Drain an eventfd.
pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64.
    let _ = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// Size of the file behind `fd` (to check a peer's region before mapping it: mapping past
/// the end of a file would fault on access).
pub fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: stat is plain old data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_size as u64)
}

/// True when the file behind `fd` is sealed against shrinking (`F_SEAL_SHRINK`), so the peer
/// that passed it cannot truncate it under our mapping (which would fault on access).
// Not called yet: the server's warning for an unsealed region (promised in the module docs
// of `pmd::memif`) was never wired up, and our own client does not seal its regions, so it
// would warn on every connection. Kept for that change; `pub` used to hide that it is unused.
#[allow(dead_code)]
pub fn shrink_sealed(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: plain fcntl on a valid descriptor; F_GET_SEALS fails harmlessly on files that
    // do not support seals.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
}

/// Wait until one of `fds` is readable (or hung up), or `timeout_ms` passes. Returns the
/// `revents` of each, in order.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    // SAFETY: fds is a valid slice of pollfd for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}
