//! Two machines for tests: network namespaces joined by a veth pair, with
//! IPv4 and IPv6 addresses, and a raw sender that puts any packet on the
//! wire (forged sources included), as another machine could. Needs root:
//! without it a test prints SKIPPED, or fails under `DIARY_TEST_NO_SKIP`.

use super::skip;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Two namespaces joined by a veth pair: the server's at `.1` / `::1`,
/// the client's at `.2` / `::2`. Both are deleted on drop.
pub struct Link {
    pub server_ns: String,
    pub client_ns: String,
    pub server_ip: String,
    pub client_ip: String,
    pub server_ip6: String,
    pub client_ip6: String,
    pub server_dev: String,
    pub client_dev: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Link {
    pub fn new() -> Option<Link> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let link = Link {
            server_ns: format!("dsrv{tag}"),
            client_ns: format!("dcli{tag}"),
            server_ip: format!("10.78.{n}.1"),
            client_ip: format!("10.78.{n}.2"),
            server_ip6: format!("fd78:{n:x}::1"),
            client_ip6: format!("fd78:{n:x}::2"),
            server_dev: format!("vs{tag}"),
            client_dev: format!("vc{tag}"),
        };
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &link.server_ns])?;
            ip(&["netns", "add", &link.client_ns])?;
            ip(&[
                "link",
                "add",
                &link.server_dev,
                "type",
                "veth",
                "peer",
                "name",
                &link.client_dev,
            ])?;
            ip(&["link", "set", &link.server_dev, "netns", &link.server_ns])?;
            ip(&["link", "set", &link.client_dev, "netns", &link.client_ns])?;
            for (ns, dev, addr, addr6) in [
                (
                    &link.server_ns,
                    &link.server_dev,
                    &link.server_ip,
                    &link.server_ip6,
                ),
                (
                    &link.client_ns,
                    &link.client_dev,
                    &link.client_ip,
                    &link.client_ip6,
                ),
            ] {
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
                let v6 = format!("{addr6}/64");
                ip(&["-n", ns, "addr", "add", &v6, "dev", dev, "nodad"])?;
                ip(&["-n", ns, "link", "set", dev, "up"])?;
                ip(&["-n", ns, "link", "set", "lo", "up"])?;
            }
            Ok(())
        };
        match setup() {
            Ok(()) => Some(link),
            Err(why) => {
                skip(&format!(
                    "no test network namespaces (needs root and iproute2): {why}"
                ));
                None
            }
        }
    }

    /// `program args…` run inside namespace `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }

    /// `diaryd --file FILE ARGS…` in the server's namespace, started and
    /// announced (killed when the [`super::Daemon`] drops); its stderr if
    /// it did not start.
    pub fn diaryd(&self, file: &std::path::Path, args: &[&str]) -> Result<super::Daemon, String> {
        let mut command = Link::command(&self.server_ns, env!("CARGO_BIN_EXE_diaryd"));
        command.arg("--file").arg(file).args(args);
        super::Daemon::spawn(command)
    }

    /// Runs `f` on a thread that has entered the client's namespace.
    pub fn in_client_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_ns(&self.client_ns, f)
    }

    /// Runs `f` on a thread that has entered the server's namespace.
    pub fn in_server_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_ns(&self.server_ns, f)
    }

    /// The hardware address of the server's end of the link.
    pub fn server_mac(&self) -> [u8; 6] {
        let out = Link::command(&self.server_ns, "cat")
            .arg(format!("/sys/class/net/{}/address", self.server_dev))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    }

    /// Puts one IP packet (IPv4 or IPv6, by its first nibble) on the
    /// client's end of the link, addressed to the server's end: no routing,
    /// no source check, as a machine on the same wire can.
    pub fn send_raw(&self, packet: Vec<u8>) {
        self.send_raw_all(vec![packet]);
    }

    /// As [`Link::send_raw`], many packets through one socket.
    pub fn send_raw_all(&self, packets: Vec<Vec<u8>>) {
        let mac = self.server_mac();
        let dev = self.client_dev.clone();
        self.in_client_ns(move || raw_send(&dev, mac, &packets));
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.server_ns]);
        let _ = ip(&["netns", "del", &self.client_ns]);
    }
}

/// Runs `f` on a thread that has entered the named network namespace.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        // SAFETY: a plain syscall on a file we hold; only this thread moves.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns: {}",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap()
}

/// Sends `packets` out of interface `dev` to hardware address `mac` through
/// an `AF_PACKET` socket: the kernel adds only the Ethernet header.
fn raw_send(dev: &str, mac: [u8; 6], packets: &[Vec<u8>]) {
    let Some(first) = packets.first() else {
        return;
    };
    let ethertype: u16 = if first[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: plain syscalls with pointers to live locals of the sizes given.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM,
            i32::from(ethertype.to_be()),
        );
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let mut to: libc::sockaddr_ll = std::mem::zeroed();
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ethertype.to_be();
        to.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&mac);
        for packet in packets {
            assert_eq!(packet[0] >> 4, first[0] >> 4, "one IP version per call");
            let sent = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            assert_eq!(sent, packet.len() as isize, "sendto: {err}");
        }
        libc::close(fd);
    }
}

/// The Internet checksum (RFC 1071) of `parts` laid end to end (each even
/// in length but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IP packet carrying `proto`'s `segment` from `src` to `dst` (both
/// IPv4 or both IPv6), its transport checksum at `csum_at` filled in.
fn ip_packet(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    proto: u8,
    mut segment: Vec<u8>,
    csum_at: usize,
) -> Vec<u8> {
    use std::net::IpAddr;
    let len = segment.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets(),
                &[0, proto],
                &(len as u16).to_be_bytes(),
            ]
            .concat();
            let sum = checksum(&[&pseudo, &segment]);
            segment[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
            let mut header = vec![0x45, 0];
            header.extend_from_slice(&((20 + len) as u16).to_be_bytes());
            header.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
            header.extend_from_slice(&s.octets());
            header.extend_from_slice(&d.octets());
            let sum = checksum(&[&header]);
            header[10..12].copy_from_slice(&sum.to_be_bytes());
            [header, segment].concat()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets(),
                &(len as u32).to_be_bytes(),
                &[0, 0, 0, proto],
            ]
            .concat();
            let sum = checksum(&[&pseudo, &segment]);
            segment[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
            let mut header = vec![0x60, 0, 0, 0];
            header.extend_from_slice(&(len as u16).to_be_bytes());
            header.extend_from_slice(&[proto, 64]);
            header.extend_from_slice(&s.octets());
            header.extend_from_slice(&d.octets());
            [header, segment].concat()
        }
        _ => panic!("{src} and {dst} are of different families"),
    }
}

/// A UDP datagram from `src` to `dst`, whatever `src` claims to be.
pub fn udp_packet(src: std::net::SocketAddr, dst: std::net::SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&src.port().to_be_bytes());
    segment.extend_from_slice(&dst.port().to_be_bytes());
    segment.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    segment.extend_from_slice(&[0, 0]);
    segment.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), 17, segment, 6)
}

/// A TCP segment from `src` to `dst` with `flags` (SYN 0x02, ACK 0x10,
/// PSH 0x08), sequence and acknowledgement numbers, and `payload`.
pub fn tcp_packet(
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    flags: u8,
    (seq, ack): (u32, u32),
    payload: &[u8],
) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&src.port().to_be_bytes());
    segment.extend_from_slice(&dst.port().to_be_bytes());
    segment.extend_from_slice(&seq.to_be_bytes());
    segment.extend_from_slice(&ack.to_be_bytes());
    segment.extend_from_slice(&[5 << 4, flags]);
    segment.extend_from_slice(&65_535u16.to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 0]);
    segment.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), 6, segment, 16)
}

/// Sets a sysctl inside namespace `ns` (`net.ipv4.conf.all.route_localnet`).
pub fn sysctl(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    in_ns(ns, move || std::fs::write(&path, value).unwrap());
}
