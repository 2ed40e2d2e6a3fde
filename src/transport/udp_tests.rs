//! The batch wrappers over real loopback sockets.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;

use super::*;

/// The voice gateway's maximum, as the batches were first made for.
const MAX_DATAGRAM: usize = 1500;

fn bound() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    s.set_nonblocking(true).expect("non-blocking");
    s
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("bound")
}

/// A datagram as received: its source, and its contents or `None` when
/// too large.
type Got = (SocketAddr, Option<Vec<u8>>);

/// Receives until `want` datagrams or a bounded number of empty tries;
/// returns what arrived and the size of each batch.
fn receive_all(batch: &mut RecvBatch, socket: &UdpSocket, want: usize) -> (Vec<Got>, Vec<usize>) {
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    let mut empty = 0;
    while got.len() < want && empty < 1000 {
        batch.clear();
        let n = batch.receive(socket.as_fd()).expect("recvmmsg");
        if n == 0 {
            empty += 1;
            std::thread::yield_now();
            continue;
        }
        sizes.push(n);
        for i in 0..batch.len() {
            match batch.get_mut(i).expect("filled slot") {
                Received::Datagram { from, data } => got.push((from, Some(data.to_vec()))),
                Received::TooLarge { from } => got.push((from, None)),
            }
        }
    }
    (got, sizes)
}

#[test]
fn a_batch_receives_every_queued_datagram_with_its_source() {
    let receiver = bound();
    let sources = [bound(), bound()];
    let mut expected = HashSet::new();
    for i in 0..100u32 {
        let source = &sources[(i % 2) as usize];
        // Distinct contents and lengths.
        let data: Vec<u8> = format!("datagram {i}")
            .into_bytes()
            .repeat(1 + i as usize % 7);
        source.send_to(&data, addr(&receiver)).expect("send");
        expected.insert((addr(source), data));
    }
    let mut batch = RecvBatch::new(32, MAX_DATAGRAM);
    let (got, sizes) = receive_all(&mut batch, &receiver, 100);
    let got: HashSet<_> = got
        .into_iter()
        .map(|(from, data)| (from, data.expect("not too large")))
        .collect();
    assert_eq!(got, expected);
    // Loopback queues them all before the first call: it takes a full batch.
    assert_eq!(sizes.first(), Some(&32));
    assert!(sizes.iter().all(|&n| n <= 32));
}

#[test]
fn a_receive_with_nothing_queued_returns_none_at_once() {
    let receiver = bound();
    let mut batch = RecvBatch::new(4, MAX_DATAGRAM);
    assert_eq!(batch.receive(receiver.as_fd()).expect("recvmmsg"), 0);
    assert_eq!(batch.len(), 0);
    assert!(batch.get_mut(0).is_none());
}

#[test]
fn a_datagram_longer_than_the_protocol_allows_is_reported_too_large() {
    let receiver = bound();
    let source = bound();
    let to = addr(&receiver);
    source.send_to(&[1u8; MAX_DATAGRAM], to).expect("send");
    source.send_to(&[2u8; MAX_DATAGRAM + 1], to).expect("send");
    source
        .send_to(&[3u8; MAX_DATAGRAM + 500], to)
        .expect("send");
    source.send_to(b"after", to).expect("send");
    let mut batch = RecvBatch::new(8, MAX_DATAGRAM);
    let (got, _) = receive_all(&mut batch, &receiver, 4);
    let from = addr(&source);
    assert_eq!(
        got,
        vec![
            (from, Some(vec![1u8; MAX_DATAGRAM])),
            (from, None),
            (from, None),
            (from, Some(b"after".to_vec())),
        ]
    );
}

#[test]
fn a_datagram_received_by_other_means_joins_the_batch() {
    let receiver = bound();
    let source = bound();
    let to = addr(&receiver);
    source.send_to(b"first", to).expect("send");
    source.send_to(b"second", to).expect("send");
    let mut batch = RecvBatch::new(4, MAX_DATAGRAM);
    let spare = batch.spare().expect("empty batch has room");
    assert_eq!(spare.len(), MAX_DATAGRAM + 1);
    // As the service does with glommio's `recv_from` before draining.
    let (n, from) = loop {
        match receiver.recv_from(batch.spare().expect("room")) {
            Ok(r) => break r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("recv_from: {e}"),
        }
    };
    batch.push(n, from);
    let mut added = 0;
    for _ in 0..1000 {
        added = batch.receive(receiver.as_fd()).expect("recvmmsg");
        if added > 0 {
            break;
        }
        std::thread::yield_now();
    }
    assert_eq!(added, 1);
    let mut contents = Vec::new();
    for i in 0..batch.len() {
        if let Some(Received::Datagram { data, .. }) = batch.get_mut(i) {
            contents.push(data.to_vec());
        }
    }
    assert_eq!(contents, vec![b"first".to_vec(), b"second".to_vec()]);
    // A length past the protocol's limit, as a cut datagram reports.
    batch.clear();
    batch.push(MAX_DATAGRAM + 1, from);
    assert!(matches!(batch.get_mut(0), Some(Received::TooLarge { .. })));
}

#[test]
fn a_full_batch_takes_no_more() {
    let mut batch = RecvBatch::new(1, MAX_DATAGRAM);
    let from = SocketAddr::from(([127, 0, 0, 1], 9));
    batch.push(3, from);
    assert_eq!(batch.len(), batch.capacity());
    assert!(batch.spare().is_none());
    batch.push(4, from);
    assert_eq!(batch.len(), 1);
}

#[test]
fn one_flush_delivers_each_datagram_to_its_own_destination_in_order() {
    let sender = bound();
    let receivers = [bound(), bound(), bound()];
    let mut batch = SendBatch::new(32, MAX_DATAGRAM);
    for i in 0..30u8 {
        let to = addr(&receivers[usize::from(i % 3)]);
        batch.push(&[i; 10], to).expect("room");
    }
    assert_eq!(batch.len(), 30);
    let flushed = batch.flush(sender.as_fd(), |to, e| panic!("{to}: {e}"));
    assert_eq!(
        flushed,
        Flushed {
            sent: 30,
            failed: 0,
            blocked: false
        }
    );
    assert!(batch.is_empty());
    for (r, receiver) in receivers.iter().enumerate() {
        let mut batch = RecvBatch::new(32, MAX_DATAGRAM);
        let (got, _) = receive_all(&mut batch, receiver, 10);
        let want: Vec<_> = (0..30u8)
            .filter(|i| usize::from(i % 3) == r)
            .map(|i| (addr(&sender), Some(vec![i; 10])))
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn a_refused_datagram_does_not_hold_up_the_rest() {
    let sender = bound();
    let receiver = bound();
    let mut batch = SendBatch::new(4, MAX_DATAGRAM);
    batch.push(b"one", addr(&receiver)).expect("room");
    // An IPv6 destination from an IPv4 socket: refused at once.
    let unreachable = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9));
    batch.push(b"lost", unreachable).expect("room");
    batch.push(b"two", addr(&receiver)).expect("room");
    let mut refused = Vec::new();
    let flushed = batch.flush(sender.as_fd(), |to, _| refused.push(to));
    assert_eq!(
        flushed,
        Flushed {
            sent: 2,
            failed: 1,
            blocked: false
        }
    );
    assert_eq!(refused, vec![unreachable]);
    let mut recv = RecvBatch::new(4, MAX_DATAGRAM);
    let (got, _) = receive_all(&mut recv, &receiver, 2);
    let contents: Vec<_> = got.into_iter().map(|(_, d)| d).collect();
    assert_eq!(contents, vec![Some(b"one".to_vec()), Some(b"two".to_vec())]);
}

#[test]
fn the_send_queue_is_bounded_and_keeps_its_order_across_pops() {
    let to = SocketAddr::from(([127, 0, 0, 1], 9));
    let other = SocketAddr::from(([127, 0, 0, 2], 10));
    let mut batch = SendBatch::new(3, MAX_DATAGRAM);
    assert_eq!(
        batch.push(&[0; MAX_DATAGRAM + 1], to),
        Err(Unqueued::TooLarge)
    );
    batch.push(b"a", to).expect("room");
    batch.push(b"b", other).expect("room");
    batch.push(b"c", to).expect("room");
    assert_eq!(batch.push(b"d", to), Err(Unqueued::Full));
    assert_eq!(batch.front(), Some((&b"a"[..], to)));
    batch.pop_front();
    // Room again at the end, by moving the rest to the front.
    batch.push(b"d", other).expect("room after a pop");
    let mut order = Vec::new();
    while let Some((data, dest)) = batch.front() {
        order.push((data.to_vec(), dest));
        batch.pop_front();
    }
    assert_eq!(
        order,
        vec![
            (b"b".to_vec(), other),
            (b"c".to_vec(), to),
            (b"d".to_vec(), other)
        ]
    );
    assert!(batch.is_empty());
}

#[test]
fn the_send_queue_makes_producers_wait_for_room_and_loses_nothing() {
    let receiver = bound();
    let to = addr(&receiver);
    glommio::LocalExecutor::default().run(async move {
        let socket = glommio::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let from = socket.local_addr().expect("bound");
        // Two slots for forty datagrams from two producers: each must wait
        // for the sending task to make room.
        let queue = std::rc::Rc::new(SendQueue::new(2, MAX_DATAGRAM));
        let sender = {
            let queue = queue.clone();
            glommio::spawn_local(async move {
                queue
                    .run(&socket, |n| panic!("{n} datagrams dropped"))
                    .await;
            })
        };
        let producers: Vec<_> = (0..2u8)
            .map(|p| {
                let queue = queue.clone();
                glommio::spawn_local(async move {
                    for i in 0..20u8 {
                        queue.send(&[p, i], to).await.expect("queued");
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.await;
        }
        let too_large = queue.send(&[0; MAX_DATAGRAM + 1], to).await;
        assert_eq!(too_large, Err(Unqueued::TooLarge));
        let mut batch = RecvBatch::new(64, MAX_DATAGRAM);
        let mut got = Vec::new();
        for _ in 0..1000 {
            futures_lite::future::yield_now().await;
            batch.clear();
            batch.receive(receiver.as_fd()).expect("recvmmsg");
            for i in 0..batch.len() {
                if let Some(Received::Datagram { from: source, data }) = batch.get_mut(i) {
                    assert_eq!(source, from);
                    got.push(data.to_vec());
                }
            }
            if got.len() == 40 {
                break;
            }
        }
        drop(sender);
        for p in 0..2u8 {
            // Each producer's datagrams leave in the order it queued them.
            let mine: Vec<_> = got.iter().filter(|d| d[0] == p).cloned().collect();
            let want: Vec<_> = (0..20u8).map(|i| vec![p, i]).collect();
            assert_eq!(mine, want);
        }
        assert_eq!(got.len(), 40);
    });
}
