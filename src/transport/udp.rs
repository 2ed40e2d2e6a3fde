//! Batched UDP I/O (shell): `recvmmsg(2)` and `sendmmsg(2)` with
//! `MSG_DONTWAIT` on the shard's UDP socket, over buffers allocated once.
//!
//! glommio 0.9.0's `UdpSocket` moves one datagram per call, each a system
//! call or an io_uring operation. The UDP services (the voice gateway,
//! the MQTT-SN gateway) keep it as the
//! readiness source (a `recv_from` that parks the task on io_uring until a
//! datagram arrives, and the fallback `send_to` when the kernel pushes
//! back) and moves the bulk of the datagrams here, many per system call:
//! [`RecvBatch`] and [`SendBatch`] wrap the calls, [`SendQueue`] gathers a
//! shard's outgoing datagrams for one sending task. Every `unsafe` of the
//! UDP services' batching lives in this module.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::task::{Poll, Waker};

use socket2::SockAddr;

/// The descriptor of glommio's socket, for the batched calls beside it.
pub fn fd_of(socket: &glommio::net::UdpSocket) -> BorrowedFd<'_> {
    // SAFETY: a glommio `UdpSocket` owns its descriptor and closes it only
    // when dropped, so the descriptor stays open while `socket` is borrowed.
    unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) }
}

/// The size of a `sockaddr_storage` (128 bytes: the cast cannot truncate).
const STORAGE_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// Datagrams received together; each slot is reused by the next batch.
pub struct RecvBatch {
    /// The longest datagram the protocol allows; each slot is one byte
    /// more, so that a longer datagram shows as cut.
    max: usize,
    /// `capacity` slots of `max + 1` bytes.
    buffers: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    /// What each filled slot holds, `len` of them.
    received: Box<[Slot]>,
    len: usize,
}

#[derive(Clone, Copy)]
struct Slot {
    from: Option<SocketAddr>,
    len: usize,
    truncated: bool,
}

const EMPTY_SLOT: Slot = Slot {
    from: None,
    len: 0,
    truncated: false,
};

/// One datagram of a [`RecvBatch`].
#[derive(Debug)]
pub enum Received<'a> {
    /// A datagram no longer than the batch's maximum, writable in place.
    Datagram {
        from: SocketAddr,
        data: &'a mut [u8],
    },
    /// Longer than the batch's maximum: the buffer cut it.
    TooLarge { from: SocketAddr },
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: `sockaddr_storage` is plain old data (integers and padding);
    // all-zero bytes are a valid value of it (family AF_UNSPEC).
    unsafe { std::mem::zeroed() }
}

fn zeroed_header() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is plain old data (integers and raw pointers); all
    // zero bytes are a valid value (null pointers, zero lengths). Building
    // it field by field is not possible where libc adds private padding.
    unsafe { std::mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// The errno of the last failed call, as `io::Error`; `EINTR` means retry.
fn last_error() -> io::Error {
    io::Error::last_os_error()
}

impl RecvBatch {
    /// A batch of `capacity` datagrams (at least one), allocated now and
    /// never again.
    pub fn new(capacity: usize, max_datagram: usize) -> RecvBatch {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        RecvBatch {
            max: max_datagram,
            buffers: vec![0u8; capacity * (max_datagram + 1)].into_boxed_slice(),
            addrs: vec![zeroed_storage(); capacity].into_boxed_slice(),
            iovecs: vec![empty_iovec(); capacity].into_boxed_slice(),
            headers: vec![zeroed_header(); capacity].into_boxed_slice(),
            received: vec![EMPTY_SLOT; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.received.len()
    }

    /// The size of a slot.
    fn slot(&self) -> usize {
        self.max + 1
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the datagrams held; their slots are reused.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The next free slot's buffer, to receive one datagram into by other
    /// means (then [`push`](Self::push) it); `None` when full.
    pub fn spare(&mut self) -> Option<&mut [u8]> {
        let size = self.slot();
        let start = self.len.checked_mul(size)?;
        self.buffers.get_mut(start..start + size)
    }

    /// Records the datagram of `len` bytes from `from` that was received
    /// into [`spare`](Self::spare); a `len` past `self.max` means it
    /// was cut. Ignored when full.
    pub fn push(&mut self, len: usize, from: SocketAddr) {
        let (size, max) = (self.slot(), self.max);
        if let Some(slot) = self.received.get_mut(self.len) {
            *slot = Slot {
                from: Some(from),
                len: len.min(size),
                truncated: len > max,
            };
            self.len += 1;
        }
    }

    /// Receives what is queued on `fd`, up to the free slots, with one
    /// `recvmmsg(2)` that does not wait; returns how many were added (0
    /// when none was queued).
    pub fn receive(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let first = self.len;
        let free = self.capacity() - first;
        if free == 0 {
            return Ok(0);
        }
        let (size, max) = (self.slot(), self.max);
        let buffers = self.buffers.as_mut_ptr();
        for i in first..self.capacity() {
            let (Some(iov), Some(addr), Some(header)) = (
                self.iovecs.get_mut(i),
                self.addrs.get_mut(i),
                self.headers.get_mut(i),
            ) else {
                return Ok(0);
            };
            // SAFETY: `i < capacity`, so `i * size` is within
            // `buffers`, which holds `capacity * size` bytes.
            iov.iov_base = unsafe { buffers.add(i * size) }.cast();
            iov.iov_len = size;
            *header = zeroed_header();
            header.msg_hdr.msg_name = std::ptr::addr_of_mut!(*addr).cast();
            header.msg_hdr.msg_namelen = STORAGE_LEN;
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
        }
        let got = loop {
            // SAFETY: `fd` is an open socket for the call (BorrowedFd).
            // Headers `first..capacity` each point at their own live
            // `sockaddr_storage` (its size in `msg_namelen`) and at one
            // iovec covering their own `size` bytes of `buffers`; no
            // two overlap, and all outlive the call, which does not block
            // (MSG_DONTWAIT) and keeps no pointer afterwards. `free` fits
            // in u32 as the capacity is clamped to it.
            let rc = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.headers.as_mut_ptr().add(first),
                    free as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = last_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        };
        let added = got.min(free);
        for i in first..first + added {
            let (Some(header), Some(addr), Some(slot)) = (
                self.headers.get(i),
                self.addrs.get(i),
                self.received.get_mut(i),
            ) else {
                break;
            };
            let name_len = header.msg_hdr.msg_namelen.min(STORAGE_LEN);
            // SAFETY: the kernel wrote a socket address of `msg_namelen`
            // bytes into `addr`, and `name_len` is within the storage.
            let from = unsafe { SockAddr::new(*addr, name_len) }.as_socket();
            let len = header.msg_len as usize;
            // A source that is not an IP address (impossible on a UDP
            // socket) leaves `from` empty, and `get_mut` skips the slot.
            *slot = Slot {
                from,
                len: len.min(size),
                truncated: len > max || header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
            self.len += 1;
        }
        Ok(added)
    }

    /// Datagram `i` of the batch (in arrival order); `None` past the end
    /// or for a slot to skip.
    pub fn get_mut(&mut self, i: usize) -> Option<Received<'_>> {
        if i >= self.len {
            return None;
        }
        let slot = *self.received.get(i)?;
        let from = slot.from?;
        if slot.truncated {
            return Some(Received::TooLarge { from });
        }
        let start = i * self.slot();
        let data = self.buffers.get_mut(start..start + slot.len)?;
        Some(Received::Datagram { from, data })
    }
}

/// Why a datagram was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unqueued {
    #[error("the send batch is full")]
    Full,
    #[error("datagram longer than the protocol allows")]
    TooLarge,
}

/// Fills `batch` (emptied first) from `socket`: parks on glommio's
/// `recv_from` until a datagram arrives; when that answered without
/// waiting (a queue had built up), takes what else is queued with one
/// `recvmmsg`. After a wait the socket was empty a moment ago, and a
/// `recvmmsg` would mostly find nothing: the next call tries the socket
/// before it parks anyway. Returns whether it waited.
pub async fn receive_batch(
    socket: &glommio::net::UdpSocket,
    batch: &mut RecvBatch,
) -> io::Result<bool> {
    batch.clear();
    let Some(first) = batch.spare() else {
        return Ok(false);
    };
    let (received, waited) = {
        let recv = socket.recv_from(first);
        futures_lite::pin!(recv);
        match futures_lite::future::poll_once(recv.as_mut()).await {
            Some(r) => (r, false),
            None => (recv.await, true),
        }
    };
    let (len, from) = received?;
    batch.push(len, from);
    if !waited {
        if let Err(e) = batch.receive(fd_of(socket)) {
            // The first datagram is in hand: keep it, say why no more.
            tracing::warn!(error = %e, "UDP batch receive failed");
        }
    }
    Ok(waited)
}

/// A non-blocking UDP socket bound to `addr` in a `SO_REUSEPORT` group:
/// each shard of a UDP service binds one to the same port.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    /// Refused by the kernel for a reason of their own (reported to the
    /// caller's callback) and removed.
    pub failed: usize,
    /// The socket would block: the rest is still queued.
    pub blocked: bool,
}

/// Datagrams waiting to be sent together, in order, each to its own
/// address; fixed capacity, allocated once.
pub struct SendBatch {
    /// The longest datagram it takes: the size of a slot.
    max: usize,
    /// `capacity` slots of `max` bytes.
    buffers: Box<[u8]>,
    /// Length and destination of the queued slots; `start..end` are queued.
    lens: Box<[usize]>,
    addrs: Box<[SockAddr]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    start: usize,
    end: usize,
}

impl SendBatch {
    /// A batch of `capacity` datagrams (at least one).
    pub fn new(capacity: usize, max_datagram: usize) -> SendBatch {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        let unspecified = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        SendBatch {
            max: max_datagram,
            buffers: vec![0u8; capacity * max_datagram].into_boxed_slice(),
            lens: vec![0; capacity].into_boxed_slice(),
            addrs: vec![unspecified; capacity].into_boxed_slice(),
            iovecs: vec![empty_iovec(); capacity].into_boxed_slice(),
            headers: vec![zeroed_header(); capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Queues a copy of `data` for `to`, after those already queued.
    pub fn push(&mut self, data: &[u8], to: SocketAddr) -> Result<(), Unqueued> {
        if data.len() > self.max {
            return Err(Unqueued::TooLarge);
        }
        if self.end == self.capacity() {
            self.compact();
        }
        let i = self.end;
        let start = i * self.max;
        let (Some(buffer), Some(len), Some(addr)) = (
            self.buffers.get_mut(start..start + data.len()),
            self.lens.get_mut(i),
            self.addrs.get_mut(i),
        ) else {
            return Err(Unqueued::Full);
        };
        buffer.copy_from_slice(data);
        *len = data.len();
        *addr = SockAddr::from(to);
        self.end += 1;
        Ok(())
    }

    /// The oldest queued datagram and its destination.
    pub fn front(&self) -> Option<(&[u8], SocketAddr)> {
        if self.is_empty() {
            return None;
        }
        let len = *self.lens.get(self.start)?;
        let to = self.addrs.get(self.start)?.as_socket()?;
        let start = self.start * self.max;
        Some((self.buffers.get(start..start + len)?, to))
    }

    /// Forgets the oldest queued datagram.
    pub fn pop_front(&mut self) {
        if !self.is_empty() {
            self.start += 1;
        }
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Moves the queued slots to the front, making room at the end.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let (from, to) = (self.start * self.max, self.end * self.max);
        self.buffers.copy_within(from..to, 0);
        self.lens.copy_within(self.start..self.end, 0);
        for i in 0..self.len() {
            if let Some(addr) = self.addrs.get(self.start + i).cloned() {
                if let Some(slot) = self.addrs.get_mut(i) {
                    *slot = addr;
                }
            }
        }
        self.end -= self.start;
        self.start = 0;
    }

    /// Sends what is queued with `sendmmsg(2)` calls that do not wait, in
    /// order, until all is sent or the socket would block. A datagram the
    /// kernel refuses for a reason of its own (say, an address it cannot
    /// reach) goes to `failed` and is removed, so that it cannot hold up
    /// the rest.
    pub fn flush(
        &mut self,
        fd: BorrowedFd<'_>,
        mut failed: impl FnMut(SocketAddr, io::Error),
    ) -> Flushed {
        let mut outcome = Flushed::default();
        let buffers = self.buffers.as_mut_ptr();
        for i in self.start..self.end {
            let (Some(iov), Some(header), Some(len), Some(addr)) = (
                self.iovecs.get_mut(i),
                self.headers.get_mut(i),
                self.lens.get(i),
                self.addrs.get(i),
            ) else {
                break;
            };
            // SAFETY: `i < capacity`, so `i * self.max` is within
            // `buffers`, which holds `capacity * self.max` bytes.
            iov.iov_base = unsafe { buffers.add(i * self.max) }.cast();
            iov.iov_len = *len;
            *header = zeroed_header();
            // The kernel only reads the address of a message it sends.
            header.msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
            header.msg_hdr.msg_namelen = addr.len();
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
        }
        while !self.is_empty() {
            let queued = self.len();
            // SAFETY: `fd` is an open socket for the call (BorrowedFd).
            // Headers `start..end` were set up above, each pointing at its
            // own live `SockAddr` (with its length) and at one iovec over
            // its own `lens[i]` (at most `self.max`) bytes of
            // `buffers`; none moved since, all outlive the call, which
            // does not block (MSG_DONTWAIT) and keeps no pointer. `queued`
            // fits in u32 as the capacity is clamped to it.
            let rc = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.headers.as_mut_ptr().add(self.start),
                    queued as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let sent = (rc as usize).min(queued);
                outcome.sent += sent;
                self.start += sent;
                continue;
            }
            if rc == 0 {
                // Nothing sent and no error: not a documented outcome; stop
                // rather than spin, and leave the rest queued.
                outcome.blocked = true;
                break;
            }
            let e = last_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    outcome.blocked = true;
                    break;
                }
                // The first queued datagram was refused (the kernel reports
                // an error only for the first message of a call).
                _ => {
                    if let Some(to) = self.addrs.get(self.start).and_then(SockAddr::as_socket) {
                        failed(to, e);
                    }
                    outcome.failed += 1;
                    self.start += 1;
                }
            }
        }
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
        }
        outcome
    }
}

/// A shard's datagrams to send, queued by whichever task produces them
/// and sent by one task, [`run`](Self::run): everything queued in one turn
/// of the executor leaves in one `sendmmsg`.
///
/// A datagram does not leave when queued: it waits for the tasks already
/// runnable on the shard (a receive batch, other conversations' bridges) to
/// queue theirs, since the sending task is woken by the first and runs
/// after them. It never waits for I/O or a timer, only for that turn of
/// the executor, which is well under a millisecond. Datagrams leave in the
/// order they were queued.
pub struct SendQueue {
    batch: RefCell<SendBatch>,
    /// The sending task, parked while the batch is empty.
    sender: RefCell<Option<Waker>>,
    /// Tasks waiting for room; each is listed once.
    waiting: RefCell<Vec<Waker>>,
}

impl SendQueue {
    /// A queue of at most `capacity` datagrams.
    pub fn new(capacity: usize, max_datagram: usize) -> SendQueue {
        SendQueue {
            batch: RefCell::new(SendBatch::new(capacity, max_datagram)),
            sender: RefCell::new(None),
            waiting: RefCell::new(Vec::new()),
        }
    }

    /// Queues a copy of `data` for `to`, first waiting for room while the
    /// queue is full (the kernel is pushing back), so that none is dropped
    /// unseen; refuses only a datagram longer than the protocol allows.
    pub async fn send(&self, data: &[u8], to: SocketAddr) -> Result<(), Unqueued> {
        loop {
            let queued = self.batch.borrow_mut().push(data, to);
            if let Some(w) = self.sender.borrow_mut().take() {
                w.wake();
            }
            match queued {
                Err(Unqueued::Full) => self.room().await,
                done => return done,
            }
        }
    }

    /// Until the batch has room.
    async fn room(&self) {
        std::future::poll_fn(|cx| {
            if !self.batch.borrow().is_full() {
                return Poll::Ready(());
            }
            let mut waiting = self.waiting.borrow_mut();
            // A task polled again before its wake-up (a bridge polls its
            // reader whenever its writer wakes) is listed once.
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn wake_waiting(&self) {
        for w in self.waiting.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Sends what is queued, for ever, through `socket`; `dropped` counts
    /// datagrams the kernel refused. Where the socket would block, the
    /// oldest datagram goes through glommio's `send_to`, which waits for
    /// the kernel, and batches resume after it: the order holds. Only one
    /// task may run this.
    pub async fn run(&self, socket: &glommio::net::UdpSocket, mut dropped: impl FnMut(u64)) {
        let mut spill = vec![0u8; self.batch.borrow().max];
        loop {
            std::future::poll_fn(|cx| {
                if !self.batch.borrow().is_empty() {
                    return Poll::Ready(());
                }
                *self.sender.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            let flushed = self.batch.borrow_mut().flush(fd_of(socket), |to, e| {
                tracing::debug!(%to, error = %e, "UDP send failed");
            });
            if flushed.failed > 0 {
                dropped(flushed.failed as u64);
            }
            self.wake_waiting();
            if !flushed.blocked {
                continue;
            }
            let oldest = {
                let batch = self.batch.borrow();
                batch.front().and_then(|(data, to)| {
                    spill.get_mut(..data.len())?.copy_from_slice(data);
                    Some((data.len(), to))
                })
            };
            self.batch.borrow_mut().pop_front();
            self.wake_waiting();
            let Some((len, to)) = oldest else {
                continue;
            };
            let data = spill.get(..len).unwrap_or_default();
            if let Err(e) = socket.send_to(data, to).await {
                tracing::debug!(%to, error = %e, "UDP send failed");
                dropped(1);
            }
        }
    }
}

#[cfg(test)]
#[path = "udp_tests.rs"]
mod tests;
