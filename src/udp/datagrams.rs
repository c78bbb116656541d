//! Datagrams in batches: on Linux one `recvmmsg` or `sendmmsg` carries up
//! to [`BATCH`] datagrams, elsewhere one `recv_from` / `send_to` at a time.
//!
//! A system call costs about 170 ns on the benchmark VM and a datagram's
//! whole trip through diaryd about 4.5 µs, so two calls per datagram were a
//! cost worth batching away. The `unsafe` below is the FFI only: pointers
//! into buffers this module owns or borrows for the call, rebuilt before
//! every call and read back only as far as the kernel's counts say.
//!
//! It also tells, for each datagram, whether it came in over the loopback
//! interface ([`RecvBatch::via_loopback`]): an address alone proves
//! nothing, since another machine can send from a forged `::ffff:127.0.0.1`.

use mio::net::UdpSocket;
use std::io;
use std::net::SocketAddr;

/// Datagrams per system call.
pub(crate) const BATCH: usize = 64;
/// Room for the largest UDP payload.
const SLOT: usize = 65_536;
/// Room for one datagram's control messages: its `IP_PKTINFO` or
/// `IPV6_PKTINFO` (40 bytes at most), in `u64`s for the header's alignment.
#[cfg(target_os = "linux")]
const CONTROL_WORDS: usize = 8;
/// The loopback interface's index in every network namespace
/// (`LOOPBACK_IFINDEX` in the kernel's `net_namespace.h`).
#[cfg(target_os = "linux")]
const LOOPBACK_IFINDEX: i32 = 1;

/// Asks the kernel to say which interface each datagram came in on, so
/// that [`RecvBatch::via_loopback`] can tell. Call once on a bound socket.
pub(crate) fn report_arrival(socket: &UdpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (level, name) = match socket.local_addr()? {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
            // On a dual-stack socket this reports IPv4 datagrams too.
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        };
        let on: libc::c_int = 1;
        // SAFETY: a plain setsockopt with a pointer to a live c_int of the size given.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

/// Buffers to receive up to [`BATCH`] datagrams with one call.
#[derive(Default)]
pub struct RecvBatch {
    /// `BATCH` slots of `SLOT` bytes, allocated at the first receive (an
    /// untouched page costs no memory, so this is mostly address space).
    buf: Vec<u8>,
    /// Slot, length, source, and whether it came via loopback, of each
    /// datagram of the last receive.
    received: Vec<(usize, usize, SocketAddr, bool)>,
    #[cfg(target_os = "linux")]
    names: Vec<socket2::SockAddrStorage>,
    #[cfg(target_os = "linux")]
    controls: Vec<[u64; CONTROL_WORDS]>,
}

impl RecvBatch {
    /// Receives what is waiting, up to [`BATCH`] datagrams; `WouldBlock`
    /// when nothing was. May return `Ok(0)` when what arrived had no usable
    /// source address, so callers count calls, not only datagrams.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf = vec![0; BATCH * SLOT];
            self.received.reserve(BATCH);
        }
        self.received.clear();
        self.recv_sys(socket)?;
        Ok(self.received.len())
    }

    /// The `i`th datagram of the last [`RecvBatch::recv`], with its source.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let (slot, len, from, _) = self.received[i];
        (&self.buf[slot * SLOT..slot * SLOT + len], from)
    }

    /// Whether the `i`th datagram came in over the loopback interface;
    /// false unless [`report_arrival`] was called. (Linux delivers an IPv6
    /// datagram from a forged v4-mapped loopback source on any interface.)
    /// Where the kernel does not say, only a plain IPv4 or IPv6 source counts.
    pub(crate) fn via_loopback(&self, i: usize) -> bool {
        self.received[i].3
    }

    #[cfg(target_os = "linux")]
    fn recv_sys(&mut self, socket: &UdpSocket) -> io::Result<()> {
        use socket2::{SockAddr, SockAddrStorage};
        use std::os::fd::AsRawFd;
        if self.names.is_empty() {
            self.names = (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect();
            self.controls = vec![[0; CONTROL_WORDS]; BATCH];
        }
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (iovec, header)) in iovecs.iter_mut().zip(headers.iter_mut()).enumerate() {
            let slot = self.buf[i * SLOT..(i + 1) * SLOT].as_mut_ptr();
            let name_len = self.names[i].size_of();
            let name = (&mut self.names[i] as *mut SockAddrStorage).cast();
            aim(header, iovec, (slot.cast(), SLOT), (name, name_len));
            header.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>();
        }
        // Through try_io, as mio asks of I/O on a registered socket's fd, so
        // that a WouldBlock re-arms readiness where mio needs it.
        let n = socket.try_io(|| {
            // SAFETY: every header points at one live slot of SLOT bytes, one
            // live address buffer and one live control buffer of the sizes
            // it states; none moves or is read during the call.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    headers.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n)
            }
        })?;
        for (i, header) in headers.iter().enumerate().take(n as usize) {
            let storage = std::mem::replace(&mut self.names[i], SockAddrStorage::zeroed());
            // SAFETY: the kernel wrote a socket address of this length into it.
            let name = unsafe { SockAddr::new(storage, header.msg_hdr.msg_namelen) };
            if let Some(from) = name.as_socket() {
                let via_lo = arrival_ifindex(&header.msg_hdr) == Some(LOOPBACK_IFINDEX);
                self.received
                    .push((i, header.msg_len as usize, from, via_lo));
            }
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_sys(&mut self, socket: &UdpSocket) -> io::Result<()> {
        for slot in 0..BATCH {
            let buf = &mut self.buf[slot * SLOT..(slot + 1) * SLOT];
            match socket.recv_from(buf) {
                Ok((len, from)) => {
                    let plain_form = from.ip().to_canonical() == from.ip();
                    self.received.push((slot, len, from, plain_form))
                }
                Err(e) if slot > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Sends up to [`BATCH`] of `replies`, in order, with one call; returns how
/// many the kernel took (at least one), or the error of the first, which
/// the caller deals with before sending the rest.
pub fn send<'a>(
    socket: &UdpSocket,
    replies: impl Iterator<Item = (SocketAddr, &'a [u8])>,
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use socket2::SockAddr;
        use std::os::fd::AsRawFd;
        let names: Vec<(SockAddr, &[u8])> = replies
            .take(BATCH)
            .map(|(to, bytes)| (SockAddr::from(to), bytes))
            .collect();
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (((name, bytes), iovec), header) in names.iter().zip(&mut iovecs).zip(&mut headers) {
            // The kernel only reads these for a send.
            let buf = (bytes.as_ptr().cast_mut().cast(), bytes.len());
            aim(
                header,
                iovec,
                buf,
                (name.as_ptr().cast_mut().cast(), name.len()),
            );
        }
        socket.try_io(|| {
            // SAFETY: the first `names.len()` headers point at addresses and
            // replies borrowed for the whole call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers.as_mut_ptr(),
                    names.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut replies = replies;
        match replies.next() {
            Some((to, bytes)) => socket.send_to(bytes, to).map(|_| 1),
            None => Ok(0),
        }
    }
}

/// The interface a received datagram came in on, from its `IP_PKTINFO`
/// or `IPV6_PKTINFO` control message; `None` without one.
#[cfg(target_os = "linux")]
fn arrival_ifindex(header: &libc::msghdr) -> Option<i32> {
    // SAFETY: the header's control buffer is ours, and the kernel set
    // msg_controllen to what it wrote there; the CMSG macros stay inside
    // it, and each payload is read unaligned at the length its header gives.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if len >= std::mem::size_of::<libc::in_pktinfo>() =>
                {
                    let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    return Some(info.ipi_ifindex);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if len >= std::mem::size_of::<libc::in6_pktinfo>() =>
                {
                    let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    return i32::try_from(info.ipi6_ifindex).ok();
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// Points one header at one buffer, through its iovec, and one address.
#[cfg(target_os = "linux")]
fn aim(
    header: &mut libc::mmsghdr,
    iovec: &mut libc::iovec,
    (base, len): (*mut libc::c_void, usize),
    (name, name_len): (*mut libc::c_void, libc::socklen_t),
) {
    iovec.iov_base = base;
    iovec.iov_len = len;
    header.msg_hdr.msg_name = name;
    header.msg_hdr.msg_namelen = name_len;
    header.msg_hdr.msg_iov = iovec;
    header.msg_hdr.msg_iovlen = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        (a, b)
    }

    /// Receives until `want` datagrams have come (the sockets are non-blocking).
    fn recv_all(
        batch: &mut RecvBatch,
        socket: &UdpSocket,
        want: usize,
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < deadline {
            match batch.recv(socket) {
                Ok(n) => (0..n).for_each(|i| {
                    let (bytes, from) = batch.get(i);
                    got.push((bytes.to_vec(), from));
                }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    /// More datagrams than one batch, of sizes from empty to the largest,
    /// arrive whole, in order, each with its source. (Sent a batch at a
    /// time: loopback drops what the receiver has no room for.)
    #[test]
    fn batches_carry_every_datagram_whole_and_in_order() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let sizes = [0usize, 1, 7, 100, 1500];
        let mut datagrams: Vec<Vec<u8>> = (0..BATCH * 2 + 5)
            .map(|i| vec![i as u8; sizes[i % sizes.len()]])
            .collect();
        datagrams.push(vec![7; 65_507]);
        let mut batch = RecvBatch::default();
        let mut sent = 0;
        while sent < datagrams.len() {
            let rest = datagrams[sent..].iter().map(|d| (to, d.as_slice()));
            let n = send(&a, rest).unwrap();
            assert!((1..=BATCH).contains(&n));
            let got = recv_all(&mut batch, &b, n);
            assert_eq!(got.len(), n);
            for ((bytes, from), want) in got.iter().zip(&datagrams[sent..]) {
                assert_eq!(bytes, want);
                assert_eq!(*from, a.local_addr().unwrap());
            }
            sent += n;
        }
        assert_eq!(
            batch.recv(&b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    /// A datagram the kernel refuses is reported as the batch's error when
    /// it comes first, and ends the batch before it otherwise.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_refused_datagram_stops_its_batch() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let too_big = vec![0u8; 70_000];
        let ok = b"ok".to_vec();
        let replies = [
            (to, &ok[..]),
            (to, &ok[..]),
            (to, &too_big[..]),
            (to, &ok[..]),
        ];
        assert_eq!(send(&a, replies.iter().copied()).unwrap(), 2);
        let err = send(&a, replies[2..].iter().copied()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
        assert_eq!(send(&a, replies[3..].iter().copied()).unwrap(), 1);
        let got = recv_all(&mut RecvBatch::default(), &b, 3);
        assert_eq!(got.len(), 3);
    }
}
