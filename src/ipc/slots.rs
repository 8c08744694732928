//! Connection slots: at most `max_connections` connections are served. When every slot is taken, the
//! connection that has sat idle longest after its handshake (waiting for its next request) is closed to make
//! room, so idle clients can never lock real ones out; only when no connection is idle (all are mid-handshake
//! or mid-request, both bounded by the frame timeout) is a newcomer refused with `busy`.
//!
//! On Windows, where named pipes have no read or write timeouts, the frame timeout is enforced here too: a
//! connection reading a frame or writing a reply records its deadline in its slot, and a watchdog thread closes
//! the connections past theirs.

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
    /// Windows: when the frame being read must have arrived, or the reply being written must be out (the
    /// watchdog closes the connection after it).
    #[cfg(windows)]
    deadline: Option<std::time::Instant>,
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
        let slots = Arc::new(Self { max, inner: Mutex::new(Inner::default()) });
        #[cfg(windows)]
        windows::start_watchdog(&slots);
        slots
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
        let entry = Entry {
            idle_since: None,
            closer,
            #[cfg(windows)]
            deadline: None,
        };
        inner.open.insert(id, entry);
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

#[cfg(windows)]
impl Slot {
    /// Records when the frame being read must have arrived (`None`: no frame is being read or reply written).
    pub(crate) fn set_deadline(&self, deadline: Option<std::time::Instant>) {
        if let Some(entry) = self.slots.inner.lock().open.get_mut(&self.id) {
            entry.deadline = deadline;
        }
    }

    /// Records that the reply being written must be out by `deadline`, until the returned guard is dropped.
    pub(crate) fn deadline_until_dropped(&self, deadline: std::time::Instant) -> DeadlineGuard<'_> {
        self.set_deadline(Some(deadline));
        DeadlineGuard(self)
    }
}

/// Windows: clears a slot's deadline when dropped (see [`Slot::deadline_until_dropped`]).
#[cfg(windows)]
pub(crate) struct DeadlineGuard<'a>(&'a Slot);

#[cfg(windows)]
impl Drop for DeadlineGuard<'_> {
    fn drop(&mut self) {
        self.0.set_deadline(None);
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
    /// A duplicate of the pipe instance's handle.
    #[cfg(windows)]
    pipe: std::os::windows::io::OwnedHandle,
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
        #[cfg(windows)]
        {
            use std::os::windows::io::AsHandle;
            #[allow(irrefutable_let_patterns)] // one variant on Windows; the enum is cross-platform
            let interprocess::local_socket::Stream::NamedPipe(s) = stream else { return None };
            s.as_handle().try_clone_to_owned().ok().map(|pipe| Self { pipe })
        }
        #[cfg(not(any(unix, windows)))]
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
        #[cfg(windows)]
        crate::platform::disconnect_pipe(&self.pipe);
    }
}

/// Windows: the frame timeout's enforcement (named pipes have no read or write timeouts).
#[cfg(windows)]
mod windows {
    use std::sync::{Arc, Weak};
    use std::time::{Duration, Instant};

    use super::Slots;

    /// How often the watchdog looks for connections past their frame deadline.
    const CHECK_EVERY: Duration = Duration::from_millis(50);

    /// Starts the watchdog of `slots`; it ends once the slots are gone (the listener stopped and every
    /// connection ended).
    pub(super) fn start_watchdog(slots: &Arc<Slots>) {
        let slots = Arc::downgrade(slots);
        let spawned = std::thread::Builder::new()
            .name("luna-conn-watchdog".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || watch(&slots));
        if let Err(e) = spawned {
            tracing::error!("could not start the connection watchdog, so frame timeouts do not apply: {e}");
        }
    }

    fn watch(slots: &Weak<Slots>) {
        loop {
            std::thread::sleep(CHECK_EVERY);
            let Some(slots) = slots.upgrade() else { return };
            let now = Instant::now();
            for entry in slots.inner.lock().open.values_mut() {
                if entry.deadline.is_some_and(|deadline| deadline <= now) {
                    entry.deadline = None;
                    if let Some(closer) = entry.closer.take() {
                        tracing::debug!("closing a connection whose frame (or reply) did not get through in time");
                        closer.close();
                    }
                }
            }
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
