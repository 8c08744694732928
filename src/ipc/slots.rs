//! Connection slots: at most `max_connections` connections are served. When every slot is taken, the
//! connection that has sat idle longest after its handshake (waiting for its next request) is closed to make
//! room, so idle clients can never lock real ones out; only when no connection is idle (all are mid-handshake
//! or mid-request, both bounded by the frame timeout) is a newcomer refused with `busy`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// The open connections.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Orders idle marks (a counter, not a clock: ties and clock steps cannot reorder them).
    ticks: u64,
    open: HashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    /// Set while the connection waits for its next request after the handshake: when it became idle.
    idle_since: Option<u64>,
    /// Closes the connection from outside (a duplicate of its descriptor); taken when it is evicted.
    closer: Option<Closer>,
}

/// What a new connection got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A free slot.
    Free,
    /// The slot of the longest-idle connection, which was closed.
    Evicted,
    /// No slot: the connection is answered `busy` and closed.
    Full,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, inner: Mutex::new(Inner::default()) })
    }

    /// Registers a new connection (also a refused one, until it has been answered).
    pub(crate) fn admit(self: &Arc<Self>, closer: Option<Closer>) -> (Slot, Admission) {
        let mut inner = self.inner.lock();
        let admission = if inner.open.len() < self.max {
            Admission::Free
        } else if inner.evict_longest_idle() {
            Admission::Evicted
        } else {
            Admission::Full
        };
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open.insert(id, Entry { idle_since: None, closer });
        (Slot { slots: Arc::clone(self), id }, admission)
    }

    #[cfg(all(test, unix))] // its one test pairs Unix sockets
    fn open(&self) -> usize {
        self.inner.lock().open.len()
    }
}

impl Inner {
    fn evict_longest_idle(&mut self) -> bool {
        let oldest = self
            .open
            .iter_mut()
            .filter(|(_, e)| e.closer.is_some())
            .filter_map(|(_, e)| e.idle_since.map(|since| (since, e)))
            .min_by_key(|(since, _)| *since);
        let Some((_, entry)) = oldest else { return false };
        let closer = entry.closer.take().expect("filtered on a closer");
        entry.idle_since = None;
        tracing::info!("all connection slots are taken: closing the connection idle longest to admit a new one");
        closer.close();
        true
    }
}

/// A connection's slot, freed on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Slot {
    /// Marks the connection idle (done with its handshake or request, waiting for the next one; an idle
    /// connection stays idle since the first mark) or busy (a request has begun).
    pub(crate) fn set_idle(&self, idle: bool) {
        let mut inner = self.slots.inner.lock();
        inner.ticks += 1;
        let tick = inner.ticks;
        if let Some(entry) = inner.open.get_mut(&self.id) {
            entry.idle_since = if idle { entry.idle_since.or(Some(tick)) } else { None };
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.inner.lock().open.remove(&self.id);
    }
}

/// Shuts a connection down from another thread: its blocked read returns end-of-stream.
#[derive(Debug)]
pub(crate) struct Closer {
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

impl Closer {
    /// A closer for `stream`, where the platform can shut a socket down from outside.
    pub(crate) fn for_stream(stream: &interprocess::local_socket::Stream) -> Option<Self> {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            #[allow(irrefutable_let_patterns)] // one variant on Unix; the enum is cross-platform
            let interprocess::local_socket::Stream::UdSocket(s) = stream else { return None };
            s.as_fd().try_clone_to_owned().ok().map(|fd| Self { fd })
        }
        #[cfg(not(unix))]
        {
            let _ = stream;
            None
        }
    }

    fn close(self) {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let _ = nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use interprocess::local_socket::{ListenerOptions, Stream, prelude::*};
    use std::io::Read;

    /// A connected pair over a real socket: (the daemon's side, the client's side).
    fn pair(dir: &std::path::Path, n: u32) -> (Stream, Stream) {
        let path = dir.join(format!("s{n}"));
        let listener =
            ListenerOptions::new().name(crate::transport::connect_name(&path).unwrap()).create_sync().unwrap();
        let client = Stream::connect(crate::transport::connect_name(&path).unwrap()).unwrap();
        (listener.accept().unwrap(), client)
    }

    #[test]
    fn the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::new(2);
        let (s1, mut peer1) = pair(dir.path(), 1);
        let (s2, _peer2) = pair(dir.path(), 2);
        let (one, a) = slots.admit(Closer::for_stream(&s1));
        let (two, b) = slots.admit(Closer::for_stream(&s2));
        assert_eq!((a, b), (Admission::Free, Admission::Free));
        // Both busy (mid-handshake or mid-request): a third is refused.
        let (refused, c) = slots.admit(None);
        assert_eq!(c, Admission::Full);
        drop(refused);
        one.set_idle(true);
        two.set_idle(true);
        two.set_idle(false);
        two.set_idle(true);
        let (_three, d) = slots.admit(None);
        assert_eq!(d, Admission::Evicted);
        // The first (idle longest) was shut down: its peer reads end-of-stream.
        assert_eq!(peer1.read(&mut [0u8; 1]).unwrap(), 0);
        drop(one);
        assert_eq!(slots.open(), 2);
        // The second is idle too, but was not closed; it goes next if needed.
        let (_four, e) = slots.admit(None);
        assert_eq!(e, Admission::Evicted);
        drop(two);
    }
}
