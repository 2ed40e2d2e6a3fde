//! Kernel-side steering of UDP audio to the shard that owns the
//! conversation: one UDP socket per shard on the same port (SO_REUSEPORT),
//! and a classic BPF program on the group that picks the socket from the
//! datagram's conn id.
//!
//! # How it fits together
//!
//! 1. The shard that handles a hello picks a conn id with
//!    [`conn_id_for_shard`], so [`owner_of_conn_id`] (the one statement of
//!    the rule, in `packet`) names that shard.
//! 2. The program ([`steering_program`]) computes the same rule in the
//!    kernel: it loads the u32 BE at offset 4 of the UDP payload (the kernel
//!    runs it with the data pointer past the UDP header) and returns it
//!    modulo `shards`. The kernel delivers the datagram to the socket at
//!    that index of the reuseport group.
//! 3. The index is the order in which the sockets joined the group, so
//!    [`bind_group`] binds them one after the other from one thread: socket
//!    `i` is shard `i`'s. Closing one socket moves the last into its slot,
//!    so the group must live and die as a whole.
//! 4. A datagram shorter than 8 bytes makes the load fail, which ends the
//!    program with 0: it lands on socket 0 and is dropped there as
//!    `TooShort`.
//! 5. Where the program cannot be attached (old kernel, seccomp), the group
//!    still works with the kernel's hash spreading, and the shells forward
//!    each datagram to [`owner_of_conn_id`] instead; [`Steering`] says
//!    which.
//!
//! [`conn_id_for_shard`]: crate::voice::packet::conn_id_for_shard
//! [`owner_of_conn_id`]: crate::voice::packet::owner_of_conn_id

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::transport::udp::bind_reuseport;
use crate::voice::packet::CONN_ID_OFFSET;

/// One classic BPF instruction without jumps.
const fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        // Opcodes are defined as u32 by libc but are 16-bit on the wire; every
        // one used here is below 0x100.
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The reuseport program for a group of `shards` sockets: `ld [4]; mod
/// #shards; ret a`, i.e. [`owner_of_conn_id`] of the datagram. Panics if
/// `shards` is 0 (a group has at least one socket).
///
/// [`owner_of_conn_id`]: crate::voice::packet::owner_of_conn_id
pub fn steering_program(shards: u32) -> Vec<libc::sock_filter> {
    assert!(shards > 0, "a reuseport group has at least one socket");
    vec![
        // A = u32 BE at payload offset 4; BPF_ABS loads are in network order.
        statement(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            CONN_ID_OFFSET as u32,
        ),
        statement(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, shards),
        statement(libc::BPF_RET | libc::BPF_A, 0),
    ]
}

/// Attaches [`steering_program`] to the reuseport group of `fd` (any member
/// will do; the program belongs to the group).
pub fn attach(fd: BorrowedFd<'_>, shards: u32) -> io::Result<()> {
    if shards == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "steering needs at least one shard",
        ));
    }
    let mut filter = steering_program(shards);
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let program = libc::sock_fprog {
        len,
        filter: filter.as_mut_ptr(),
    };
    // `sock_fprog` is two words; the cast cannot truncate.
    let program_size = std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t;
    // SAFETY: `fd` is a valid open socket for the duration of the call
    // (BorrowedFd). `program` points at `filter`, a live, initialised array of
    // `len` instructions; the kernel copies it before returning and keeps no
    // pointer into our memory. The option length is the size of the struct
    // passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(program).cast::<libc::c_void>(),
            program_size,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether datagrams reach their owning shard by the kernel or need
/// forwarding.
#[derive(Debug)]
pub enum Steering {
    /// The program is attached: socket `i` receives conn ids `≡ i (mod n)`.
    Attached,
    /// Not asked for (`steering = "forward"`, or one shard).
    Off,
    /// Asked for but refused by the kernel; the shells must forward.
    Failed(io::Error),
}

impl Steering {
    pub fn is_attached(&self) -> bool {
        matches!(self, Steering::Attached)
    }
}

/// A reuseport group, socket `i` belonging to shard `i`.
#[derive(Debug)]
pub struct UdpGroup {
    pub sockets: Vec<OwnedFd>,
    /// The address actually bound, port 0 resolved: the hello's `udp.port`
    /// when the config leaves it to the system.
    pub local_addr: SocketAddr,
    pub steering: Steering,
}

/// Binds `shards` non-blocking UDP sockets with SO_REUSEADDR and
/// SO_REUSEPORT on `addr`, in order (rule 3), the first resolving port 0 for
/// the rest, then, when `steer`, attaches the program. A failed attach is
/// not an error: it is reported in [`UdpGroup::steering`].
///
/// Call from one thread before handing socket `i` to shard `i`.
pub fn bind_group(addr: SocketAddr, shards: usize, steer: bool) -> io::Result<UdpGroup> {
    let shards_u32 = u32::try_from(shards)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "shards must be 1..=u32::MAX")
        })?;
    let first = bind_reuseport(addr)?;
    let local_addr = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    let mut sockets = Vec::with_capacity(shards);
    sockets.push(OwnedFd::from(first));
    for _ in 1..shards {
        sockets.push(OwnedFd::from(bind_reuseport(local_addr)?));
    }
    let steering = match sockets.first() {
        Some(fd) if steer => match attach(fd.as_fd(), shards_u32) {
            Ok(()) => Steering::Attached,
            Err(e) => Steering::Failed(e),
        },
        _ => Steering::Off,
    };
    Ok(UdpGroup {
        sockets,
        local_addr,
        steering,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::packet::{owner_of_conn_id, Header};
    use proptest::prelude::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    #[test]
    fn program_opcodes() {
        let p = steering_program(4);
        let raw: Vec<(u16, u32)> = p.iter().map(|i| (i.code, i.k)).collect();
        // ld [4] = 0x20, mod #4 = 0x94, ret a = 0x16 (linux/filter.h).
        assert_eq!(raw, [(0x20, 4), (0x94, 4), (0x16, 0)]);
        assert!(p.iter().all(|i| i.jt == 0 && i.jf == 0));
    }

    /// Runs the three-instruction program on a payload as the kernel would.
    fn run(program: &[libc::sock_filter], payload: &[u8]) -> u32 {
        let mut a = 0u32;
        for i in program {
            match u32::from(i.code) {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let at = i.k as usize;
                    let Some(word) = payload.get(at..at + 4) else {
                        return 0;
                    };
                    a = u32::from_be_bytes(word.try_into().unwrap());
                }
                c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= i.k,
                c if c == libc::BPF_RET | libc::BPF_A => return a,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
        panic!("no return")
    }

    proptest! {
        #[test]
        fn program_applies_the_owner_rule(shards in 1u32..=64, conn_id: u32) {
            let payload = datagram(conn_id, 0);
            prop_assert_eq!(
                run(&steering_program(shards), &payload),
                owner_of_conn_id(conn_id, shards)
            );
        }
    }

    fn datagram(conn_id: u32, tag: u32) -> Vec<u8> {
        let mut d = Header {
            payload_len: 4,
            conn_id,
            timestamp: 0,
            sequence: 1,
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(&tag.to_be_bytes());
        d
    }

    /// Reads every socket until `expected` datagrams arrived or 5 s passed;
    /// returns (socket index, datagram) pairs.
    fn drain(sockets: &[UdpSocket], expected: usize) -> Vec<(usize, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < expected && Instant::now() < deadline {
            for (i, s) in sockets.iter().enumerate() {
                loop {
                    match s.recv_from(&mut buf) {
                        Ok((n, _)) => got.push((i, buf[..n].to_vec())),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("recv: {e}"),
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn kernel_steers_by_conn_id() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 4, true).unwrap();
        assert!(group.steering.is_attached(), "{:?}", group.steering);
        assert_ne!(group.local_addr.port(), 0);
        let sockets: Vec<UdpSocket> = group.sockets.into_iter().map(UdpSocket::from).collect();
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap(), group.local_addr);
        }

        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut expected = Vec::new();
        for tag in 0..200u32 {
            let conn_id: u32 = rand::random();
            sender
                .send_to(&datagram(conn_id, tag), group.local_addr)
                .unwrap();
            expected.push(owner_of_conn_id(conn_id, 4) as usize);
        }
        // Too short to hold a conn id: the load fails and the program
        // returns 0.
        sender.send_to(b"short!!", group.local_addr).unwrap();

        let got = drain(&sockets, 201);
        assert_eq!(got.len(), 201);
        let mut seen = [false; 200];
        for (socket, d) in got {
            if d.len() == 7 {
                assert_eq!(socket, 0, "short datagram");
                continue;
            }
            let tag = u32::from_be_bytes(d[16..20].try_into().unwrap()) as usize;
            assert_eq!(socket, expected[tag], "datagram {tag}");
            assert!(!seen[tag]);
            seen[tag] = true;
        }
    }

    #[test]
    fn group_without_steering() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2, false).unwrap();
        assert!(matches!(group.steering, Steering::Off));
        assert_eq!(group.sockets.len(), 2);
        let one = bind_group("127.0.0.1:0".parse().unwrap(), 1, true).unwrap();
        assert!(one.steering.is_attached(), "{:?}", one.steering);
    }

    #[test]
    fn invalid_shard_counts() {
        let err = bind_group("127.0.0.1:0".parse().unwrap(), 0, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = attach(socket.as_fd(), 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
