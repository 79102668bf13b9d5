//! Connections and TLS handshakes shared fairly between client addresses (ConnectionGate)
//! and what each connection's quiet time is measured from (Activity).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

use super::Rejection;

/// How long a connection must have gone without a request in progress (counted from when it
/// got its slot if it never had one) before it may be closed to make room for another, and how
/// long a TLS handshake must have been running before it may be cut off for another: a
/// connection between two requests of a busy client, or one just opened, is left alone.
const DISPLACEABLE_AFTER: Duration = Duration::from_millis(250);

/// How often the gate looks again for room while connections wait for their turn: a
/// connection becomes displaceable by time passing, which no event announces.
const RECHECK_EVERY: Duration = Duration::from_millis(100);

/// Open connections of one listener and the TLS handshakes in progress, shared fairly between
/// client addresses. Both are capped overall and per address; a connection over a cap waits
/// for its turn ([`Turn`]) instead of being refused, and a turn that frees goes to the waiting
/// connection whose address holds the fewest. When the overall cap is reached, a connection
/// from an address holding at least two fewer than another takes the place of that address's
/// connection quiet the longest, which is closed gracefully (HTTP/1.1 between requests,
/// HTTP/2 with a GOAWAY); one over its own address's cap takes the place of one of its own.
/// So whatever other addresses hold, a client from an address holding few gets a connection.
/// Handshake turns are shared the same way, the handshake running longest giving way. Also
/// what the shutdown drain waits on.
pub(crate) struct ConnectionGate {
    caps: Caps,
    open: watch::Sender<usize>,
    state: Mutex<GateState>,
    /// Wakes [`ConnectionGate::keep`] when a connection starts waiting.
    queued: Notify,
}

#[derive(Clone, Copy, Debug)]
struct Caps {
    connections: usize,
    connections_per_peer: usize,
    handshakes: usize,
    handshakes_per_peer: usize,
}

#[derive(Default)]
struct GateState {
    peers: HashMap<IpAddr, Peer>,
    connections: usize,
    handshakes: usize,
    /// Connections waiting for a slot, and for a handshake turn, all addresses together.
    waiting_for_slots: usize,
    waiting_for_handshakes: usize,
    next_id: u64,
}

/// What one client address holds and waits for.
#[derive(Default)]
struct Peer {
    connections: Vec<Held>,
    handshakes: usize,
    /// Of `connections`, those asked to close; of `handshakes`, those of such connections.
    displaced: usize,
    displaced_handshakes: usize,
    /// Its connections waiting for a slot, and for a handshake turn, in arrival order.
    slot_queue: VecDeque<SlotWaiter>,
    handshake_queue: VecDeque<HandshakeWaiter>,
    /// Connections asked to close to make room for those waiting, and not closed yet.
    slot_rooms: usize,
    handshake_rooms: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Slot,
    Handshake,
}

impl Peer {
    fn is_unused(&self) -> bool {
        self.connections.is_empty()
            && self.handshakes == 0
            && self.slot_queue.is_empty()
            && self.handshake_queue.is_empty()
            && self.slot_rooms == 0
            && self.handshake_rooms == 0
    }

    /// What it holds and does not give up already, with the room made for its waiting
    /// connections counted as its own: what fairness compares.
    fn share(&self, kind: Kind) -> usize {
        match kind {
            Kind::Slot => self.connections.len() - self.displaced + self.slot_rooms,
            Kind::Handshake => self.handshakes - self.displaced_handshakes + self.handshake_rooms,
        }
    }

    /// How many of its waiting connections no room has been made for yet.
    fn needs_room(&self, kind: Kind) -> usize {
        match kind {
            Kind::Slot => self.slot_queue.len().saturating_sub(self.slot_rooms),
            Kind::Handshake => self
                .handshake_queue
                .len()
                .saturating_sub(self.handshake_rooms),
        }
    }

    fn rooms(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Slot => &mut self.slot_rooms,
            Kind::Handshake => &mut self.handshake_rooms,
        }
    }

    fn held(&mut self, connection: &Arc<OpenConnection>) -> Option<&mut Held> {
        self.connections
            .iter_mut()
            .find(|held| Arc::ptr_eq(&held.connection, connection))
    }

    /// Of its connections not asked to close yet, the one quiet the longest, if quiet since
    /// `settled` or before; or, for `Kind::Handshake`, the one whose handshake has run the
    /// longest, if since `settled` or before. Its index and since when.
    fn longest(&self, kind: Kind, settled: Instant) -> Option<(usize, Instant)> {
        self.connections
            .iter()
            .enumerate()
            .filter(|(_, held)| !held.connection.is_displaced())
            .filter_map(|(index, held)| {
                let since = match kind {
                    Kind::Slot => held.connection.activity.quiet_since(settled),
                    Kind::Handshake => held.handshake_since.filter(|since| *since <= settled),
                };
                Some((index, since?))
            })
            .min_by_key(|(_, since)| *since)
    }
}

/// An open connection as the gate counts it.
struct Held {
    connection: Arc<OpenConnection>,
    /// When its handshake turn began, while it holds one.
    handshake_since: Option<Instant>,
    /// The address it was asked to close for, and what for.
    room_for: Option<(IpAddr, Kind)>,
}

struct SlotWaiter {
    id: u64,
    grant: oneshot::Sender<ConnectionSlot>,
}

struct HandshakeWaiter {
    id: u64,
    connection: Arc<OpenConnection>,
    grant: oneshot::Sender<HandshakePermit>,
}

/// A turn given under the gate's lock, handed over once the lock is released: a turn nobody
/// takes any more (its connection gave up waiting) is dropped there, which gives it back.
enum Given {
    Slot(oneshot::Sender<ConnectionSlot>, ConnectionSlot),
    Handshake(oneshot::Sender<HandshakePermit>, HandshakePermit),
}

impl Given {
    fn hand_over(self) {
        match self {
            Given::Slot(to, slot) => drop(to.send(slot)),
            Given::Handshake(to, permit) => drop(to.send(permit)),
        }
    }
}

impl ConnectionGate {
    pub fn new(
        max_total: usize,
        max_per_peer: usize,
        max_handshakes: usize,
        max_handshakes_per_peer: usize,
    ) -> Self {
        Self {
            caps: Caps {
                connections: max_total,
                connections_per_peer: max_per_peer,
                handshakes: max_handshakes,
                handshakes_per_peer: max_handshakes_per_peer,
            },
            open: watch::Sender::new(0),
            state: Mutex::new(GateState::default()),
            queued: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection from `peer`: at once when the caps allow, else a place in
    /// the queue. The queue holds as many as may be open, and as many of one address as it
    /// may hold open; when it is full, the address with the most waiting, two or more above
    /// this one's, gives up its longest-waiting place. Otherwise the connection is refused at
    /// once.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Turn<ConnectionSlot>, Rejection> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let entry = state.peers.entry(peer).or_default();
        let at_peer_cap = entry.connections.len() >= self.caps.connections_per_peer;
        if !at_peer_cap && state.connections < self.caps.connections {
            return Ok(Turn::Ready(self.give_slot(state, peer)));
        }
        let refusal = if at_peer_cap {
            Rejection::ConnectionsPerPeer
        } else {
            Rejection::Connections
        };
        let waiting = entry.slot_queue.len();
        let place = if waiting >= self.caps.connections_per_peer {
            false
        } else if state.waiting_for_slots >= self.caps.connections {
            give_up_a_place(state, waiting)
        } else {
            true
        };
        if !place {
            if state.peers.get(&peer).is_some_and(Peer::is_unused) {
                state.peers.remove(&peer);
            }
            return Err(refusal);
        }
        let id = state.next_id;
        state.next_id += 1;
        let (grant, granted) = oneshot::channel();
        let entry = state.peers.entry(peer).or_default();
        entry.slot_queue.push_back(SlotWaiter { id, grant });
        state.waiting_for_slots += 1;
        Ok(self.wait(guard, peer, Kind::Slot, id, granted, refusal))
    }

    /// A turn to run the TLS handshake of the connection in `slot`: at once when fewer than
    /// `max_handshakes` are in progress, and fewer than `max_handshakes_per_peer` from its
    /// address; else a place in the queue.
    pub fn handshake(self: &Arc<Self>, slot: &ConnectionSlot) -> Turn<HandshakePermit> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let peer = slot.connection.peer;
        let entry = state.peers.entry(peer).or_default();
        if entry.handshakes < self.caps.handshakes_per_peer
            && state.handshakes < self.caps.handshakes
        {
            return Turn::Ready(self.give_handshake(state, &slot.connection));
        }
        let id = state.next_id;
        state.next_id += 1;
        let (grant, granted) = oneshot::channel();
        entry.handshake_queue.push_back(HandshakeWaiter {
            id,
            connection: slot.connection.clone(),
            grant,
        });
        state.waiting_for_handshakes += 1;
        self.wait(
            guard,
            peer,
            Kind::Handshake,
            id,
            granted,
            Rejection::Handshakes,
        )
    }

    /// The turn of the waiter just queued, after a first look for room for it; the keeper
    /// looks again while it waits.
    fn wait<T>(
        self: &Arc<Self>,
        mut guard: MutexGuard<'_, GateState>,
        peer: IpAddr,
        kind: Kind,
        id: u64,
        granted: oneshot::Receiver<T>,
        refusal: Rejection,
    ) -> Turn<T> {
        self.make_room(&mut guard, Instant::now(), Some(peer));
        drop(guard);
        self.queued.notify_one();
        Turn::Waiting(Waiting {
            gate: self.clone(),
            peer,
            kind,
            id,
            granted,
            refusal,
        })
    }

    /// A slot for `peer`. Its connection's quiet time counts from now, not from its accept:
    /// one that waited for its turn is not the first to give way once it has it.
    fn give_slot(self: &Arc<Self>, state: &mut GateState, peer: IpAddr) -> ConnectionSlot {
        let connection = Arc::new(OpenConnection {
            peer,
            activity: Arc::new(Activity::new(Instant::now())),
            displaced: AtomicBool::new(false),
            wake: Notify::new(),
        });
        state.peers.entry(peer).or_default().connections.push(Held {
            connection: connection.clone(),
            handshake_since: None,
            room_for: None,
        });
        state.connections += 1;
        self.open.send_modify(|open| *open += 1);
        ConnectionSlot {
            gate: self.clone(),
            connection,
        }
    }

    fn give_handshake(
        self: &Arc<Self>,
        state: &mut GateState,
        connection: &Arc<OpenConnection>,
    ) -> HandshakePermit {
        let entry = state.peers.entry(connection.peer).or_default();
        entry.handshakes += 1;
        if connection.is_displaced() {
            entry.displaced_handshakes += 1;
        }
        if let Some(held) = entry.held(connection) {
            held.handshake_since = Some(Instant::now());
        }
        state.handshakes += 1;
        HandshakePermit {
            gate: self.clone(),
            connection: connection.clone(),
        }
    }

    /// Gives the slots and handshake turns that are free, each to the waiting connection whose
    /// address holds the fewest (the earliest first among equals).
    fn give_turns(self: &Arc<Self>, state: &mut GateState) -> Vec<Given> {
        let mut given = Vec::new();
        while state.waiting_for_slots > 0 && state.connections < self.caps.connections {
            let next = state
                .peers
                .iter()
                .filter(|(_, peer)| peer.connections.len() < self.caps.connections_per_peer)
                .filter_map(|(ip, peer)| {
                    let first = peer.slot_queue.front()?;
                    Some(((peer.connections.len(), first.id), *ip))
                })
                .min();
            let Some((_, ip)) = next else { break };
            let Some(waiter) = state
                .peers
                .get_mut(&ip)
                .and_then(|p| p.slot_queue.pop_front())
            else {
                break;
            };
            state.waiting_for_slots -= 1;
            let slot = self.give_slot(state, ip);
            given.push(Given::Slot(waiter.grant, slot));
        }
        while state.waiting_for_handshakes > 0 && state.handshakes < self.caps.handshakes {
            let next = state
                .peers
                .iter()
                .filter(|(_, peer)| peer.handshakes < self.caps.handshakes_per_peer)
                .filter_map(|(ip, peer)| {
                    let first = peer.handshake_queue.front()?;
                    Some(((peer.handshakes, first.id), *ip))
                })
                .min();
            let Some((_, ip)) = next else { break };
            let Some(waiter) = state
                .peers
                .get_mut(&ip)
                .and_then(|p| p.handshake_queue.pop_front())
            else {
                break;
            };
            state.waiting_for_handshakes -= 1;
            let permit = self.give_handshake(state, &waiter.connection);
            given.push(Given::Handshake(waiter.grant, permit));
        }
        given
    }

    /// Asks connections to close for the waiting ones of `only` (of every address when
    /// `None`, those holding the fewest first), one for each waiting connection:
    /// - over its address's cap: that address's connection quiet the longest;
    /// - at the overall cap of connections: the connection quiet the longest of the address
    ///   holding the most, if that is two or more above the waiter's;
    /// - at the overall cap of handshakes: likewise, the handshake running the longest of the
    ///   address running the most.
    ///
    /// Only connections quiet, and handshakes running, for [`DISPLACEABLE_AFTER`] give way.
    fn make_room(&self, state: &mut GateState, now: Instant, only: Option<IpAddr>) {
        let Some(settled) = now.checked_sub(DISPLACEABLE_AFTER) else {
            return;
        };
        for kind in [Kind::Slot, Kind::Handshake] {
            let mut needy: Vec<(usize, IpAddr)> = state
                .peers
                .iter()
                .filter(|(ip, _)| only.is_none_or(|only| only == **ip))
                .filter(|(_, peer)| peer.needs_room(kind) > 0)
                .map(|(ip, peer)| (peer.share(kind), *ip))
                .collect();
            needy.sort_unstable();
            // Once no address gives way at an overall cap, none does for those holding more.
            let mut exhausted = false;
            for (_, ip) in needy {
                while state
                    .peers
                    .get(&ip)
                    .is_some_and(|peer| peer.needs_room(kind) > 0)
                {
                    let (victim, at_overall_cap) = self.victim(state, ip, kind, settled, exhausted);
                    let Some((victim_ip, index)) = victim else {
                        exhausted |= at_overall_cap;
                        break;
                    };
                    displace(state, victim_ip, index, ip, kind);
                }
            }
        }
    }

    /// The connection to close to make room for one of `ip`'s waiting for `kind`, as
    /// [`ConnectionGate::make_room`] says; and whether the overall cap was what it looked
    /// past (not the address's own).
    fn victim(
        &self,
        state: &GateState,
        ip: IpAddr,
        kind: Kind,
        settled: Instant,
        exhausted: bool,
    ) -> (Option<(IpAddr, usize)>, bool) {
        let Some(peer) = state.peers.get(&ip) else {
            return (None, false);
        };
        let at_overall_cap = match kind {
            Kind::Slot if peer.connections.len() >= self.caps.connections_per_peer => {
                let own = peer.longest(kind, settled).map(|(index, _)| (ip, index));
                return (own, false);
            }
            Kind::Slot => state.connections >= self.caps.connections,
            Kind::Handshake => {
                peer.handshakes < self.caps.handshakes_per_peer
                    && state.handshakes >= self.caps.handshakes
            }
        };
        if !at_overall_cap || exhausted {
            return (None, at_overall_cap);
        }
        let mine = peer.share(kind);
        let mut richer: Vec<(usize, IpAddr)> = state
            .peers
            .iter()
            .map(|(other, peer)| (peer.share(kind), *other))
            .filter(|(share, _)| *share >= mine + 2)
            .collect();
        richer.sort_unstable_by(|a, b| b.cmp(a));
        // Of the addresses holding the most with one that may give way, that longest.
        let mut best: Option<(usize, Instant, IpAddr, usize)> = None;
        for (share, other) in richer {
            if best.is_some_and(|(top, ..)| share < top) {
                break;
            }
            let Some((index, since)) = state.peers[&other].longest(kind, settled) else {
                continue;
            };
            if best.is_none_or(|(_, oldest, ..)| since < oldest) {
                best = Some((share, since, other, index));
            }
        }
        (best.map(|(_, _, other, index)| (other, index)), true)
    }

    /// Gives turns and makes room while connections wait, looking again every
    /// [`RECHECK_EVERY`]. Runs for as long as the listener.
    pub async fn keep(self: Arc<Self>) {
        loop {
            self.queued.notified().await;
            loop {
                tokio::time::sleep(RECHECK_EVERY).await;
                let mut state = self.lock();
                let given = self.give_turns(&mut state);
                self.make_room(&mut state, Instant::now(), None);
                let waiting = state.waiting_for_slots + state.waiting_for_handshakes > 0;
                drop(state);
                given.into_iter().for_each(Given::hand_over);
                if !waiting {
                    break;
                }
            }
        }
    }

    fn leave_queue(&self, peer: IpAddr, kind: Kind, id: u64) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(entry) = state.peers.get_mut(&peer) else {
            return;
        };
        let left = match kind {
            Kind::Slot => remove_by_id(&mut entry.slot_queue, id, |w| w.id),
            Kind::Handshake => remove_by_id(&mut entry.handshake_queue, id, |w| w.id),
        };
        if left {
            match kind {
                Kind::Slot => state.waiting_for_slots -= 1,
                Kind::Handshake => state.waiting_for_handshakes -= 1,
            }
        }
        if entry.is_unused() {
            state.peers.remove(&peer);
        }
    }

    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Completes when no connection is open.
    pub async fn closed(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open == 0).await;
    }
}

/// Takes the longest-waiting place in the queue of slots from the address with the most
/// waiting, if that is two or more above `mine`: its connection is refused as if its wait
/// had run out. Whether a place was freed.
fn give_up_a_place(state: &mut GateState, mine: usize) -> bool {
    let richest = state
        .peers
        .iter_mut()
        .max_by_key(|(_, peer)| peer.slot_queue.len())
        .filter(|(_, peer)| peer.slot_queue.len() >= mine + 2);
    let Some((_, peer)) = richest else {
        return false;
    };
    // Dropping its sender ends its wait.
    peer.slot_queue.pop_front();
    state.waiting_for_slots -= 1;
    true
}

/// Removes the entry whose id is `id`; whether there was one.
fn remove_by_id<T>(queue: &mut VecDeque<T>, id: u64, id_of: impl Fn(&T) -> u64) -> bool {
    let Some(index) = queue.iter().position(|entry| id_of(entry) == id) else {
        return false;
    };
    queue.remove(index);
    true
}

/// Asks connection `index` of `victim` to close, to make room for one of `for_ip`'s waiting
/// for `kind`.
fn displace(state: &mut GateState, victim: IpAddr, index: usize, for_ip: IpAddr, kind: Kind) {
    let Some(peer) = state.peers.get_mut(&victim) else {
        return;
    };
    let Some(held) = peer.connections.get_mut(index) else {
        return;
    };
    held.room_for = Some((for_ip, kind));
    held.connection.displace();
    peer.displaced += 1;
    if held.handshake_since.is_some() {
        peer.displaced_handshakes += 1;
    }
    if let Some(waiting) = state.peers.get_mut(&for_ip) {
        *waiting.rooms(kind) += 1;
    }
}

/// A slot or a handshake turn, given at once or waited for.
pub(crate) enum Turn<T> {
    Ready(T),
    Waiting(Waiting<T>),
}

pub(crate) struct Waiting<T> {
    gate: Arc<ConnectionGate>,
    peer: IpAddr,
    kind: Kind,
    id: u64,
    granted: oneshot::Receiver<T>,
    /// Why the connection is closed if its turn does not come.
    refusal: Rejection,
}

impl<T> Turn<T> {
    /// The turn, once given; the reason it was not if not by `deadline`.
    pub async fn until(self, deadline: Instant) -> Result<T, Rejection> {
        match self {
            Turn::Ready(turn) => Ok(turn),
            Turn::Waiting(mut waiting) => {
                match tokio::time::timeout_at(deadline, &mut waiting.granted).await {
                    Ok(Ok(turn)) => Ok(turn),
                    _ => Err(waiting.refusal),
                }
            }
        }
    }
}

impl<T> Drop for Waiting<T> {
    fn drop(&mut self) {
        self.gate.leave_queue(self.peer, self.kind, self.id);
    }
}

/// One open connection, shared by its task and the gate: its [`Activity`], which tells the
/// gate how long it has been quiet, and whether the gate asked it to close.
pub(crate) struct OpenConnection {
    peer: IpAddr,
    activity: Arc<Activity>,
    displaced: AtomicBool,
    wake: Notify,
}

impl OpenConnection {
    fn displace(&self) {
        self.displaced.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn is_displaced(&self) -> bool {
        self.displaced.load(Ordering::Acquire)
    }
}

/// A connection's place in the gate, held until the guard drops.
pub(crate) struct ConnectionSlot {
    gate: Arc<ConnectionGate>,
    connection: Arc<OpenConnection>,
}

impl ConnectionSlot {
    pub fn activity(&self) -> Arc<Activity> {
        self.connection.activity.clone()
    }

    /// Completes when the gate asks the connection to close, to make room for another.
    pub async fn displaced(&self) {
        loop {
            if self.connection.is_displaced() {
                return;
            }
            self.connection.wake.notified().await;
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let gate = &self.gate;
        let mut guard = gate.lock();
        let state = &mut *guard;
        let peer = self.connection.peer;
        let mut room_for = None;
        if let Some(entry) = state.peers.get_mut(&peer) {
            let index = entry
                .connections
                .iter()
                .position(|held| Arc::ptr_eq(&held.connection, &self.connection));
            if let Some(held) = index.map(|index| entry.connections.swap_remove(index)) {
                if held.connection.is_displaced() {
                    entry.displaced -= 1;
                }
                room_for = held.room_for;
            }
            if entry.is_unused() {
                state.peers.remove(&peer);
            }
        }
        if let Some((for_ip, kind)) = room_for {
            if let Some(entry) = state.peers.get_mut(&for_ip) {
                *entry.rooms(kind) -= 1;
                if entry.is_unused() {
                    state.peers.remove(&for_ip);
                }
            }
        }
        state.connections -= 1;
        gate.open.send_modify(|open| *open -= 1);
        let given = gate.give_turns(state);
        drop(guard);
        given.into_iter().for_each(Given::hand_over);
    }
}

/// A TLS handshake in progress, counted until dropped.
pub(crate) struct HandshakePermit {
    gate: Arc<ConnectionGate>,
    connection: Arc<OpenConnection>,
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        let gate = &self.gate;
        let mut guard = gate.lock();
        let state = &mut *guard;
        let peer = self.connection.peer;
        if let Some(entry) = state.peers.get_mut(&peer) {
            entry.handshakes -= 1;
            if self.connection.is_displaced() {
                entry.displaced_handshakes -= 1;
            }
            if let Some(held) = entry.held(&self.connection) {
                held.handshake_since = None;
            }
            if entry.is_unused() {
                state.peers.remove(&peer);
            }
        }
        state.handshakes -= 1;
        let given = gate.give_turns(state);
        drop(guard);
        given.into_iter().for_each(Given::hand_over);
    }
}

/// The requests in progress on one connection and when the last one ended: for the
/// connection's idle deadline, and for the gate choosing which connection gives way. Read
/// only when needed, so a request costs two atomic updates and wakes nothing (a channel here
/// woke the connection task twice per request).
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Requests begun on the connection so far: tells the head deadline its head arrived.
    begun: AtomicU64,
    /// When a request last ended, in ms after `epoch` ([`Activity::NEVER`] until one has):
    /// read only when none is in progress, so it is when the connection went quiet.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    const NEVER: u64 = u64::MAX;

    pub fn new(epoch: Instant) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(Self::NEVER),
            epoch,
        }
    }

    pub fn started(&self) {
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub fn ended(&self) {
        // Stamped before the count falls, so a deadline that sees no request in progress
        // also sees when the last one ended.
        let ms = (Instant::now() - self.epoch).as_millis();
        self.idle_since_ms.store(
            u64::try_from(ms).unwrap_or(Self::NEVER - 1),
            Ordering::Release,
        );
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Until when the connection may stay open without a new request: `idle_timeout` after
    /// the last request ended, or after `now` while one is in progress; `None` if it has
    /// never had a request (the first-request deadline has passed).
    pub fn quiet_until(&self, now: Instant, idle_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(now + idle_timeout);
        }
        match self.idle_since_ms.load(Ordering::Acquire) {
            Self::NEVER => None,
            ms => Some(self.epoch + Duration::from_millis(ms) + idle_timeout),
        }
    }

    /// How many requests have begun on the connection.
    pub fn begun(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }

    /// Whether no request is in progress.
    pub fn is_quiet(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Since when no request has been in progress (since accept if none ever was); `None`
    /// while one is, or if it ended after `now`.
    fn quiet_since(&self, now: Instant) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = match self.idle_since_ms.load(Ordering::Acquire) {
            Self::NEVER => self.epoch,
            ms => self.epoch + Duration::from_millis(ms),
        };
        (since <= now).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_quiet_from_its_last_answer_and_never_while_a_request_runs() {
        let idle = Duration::from_secs(90);
        let accepted = Instant::now();
        let activity = Activity::new(accepted);
        assert_eq!(activity.quiet_until(accepted, idle), None, "no request yet");

        tokio::time::advance(Duration::from_secs(3)).await;
        activity.started();
        activity.started();
        tokio::time::advance(Duration::from_secs(200)).await;
        let now = Instant::now();
        assert_eq!(
            activity.quiet_until(now, idle),
            Some(now + idle),
            "in progress"
        );
        activity.ended();
        assert_eq!(
            activity.quiet_until(now, idle),
            Some(now + idle),
            "one left"
        );

        tokio::time::advance(Duration::from_secs(5)).await;
        activity.ended();
        let last_answer = Instant::now();
        tokio::time::advance(Duration::from_secs(30)).await;
        let now = Instant::now();
        assert_eq!(activity.quiet_until(now, idle), Some(last_answer + idle));
    }

    fn ip(last: u8) -> IpAddr {
        [10, 0, 0, last].into()
    }

    /// A slot given at once; panics if the gate makes it wait.
    fn slot(gate: &Arc<ConnectionGate>, peer: IpAddr) -> ConnectionSlot {
        match gate.admit(peer) {
            Ok(Turn::Ready(slot)) => slot,
            Ok(Turn::Waiting(_)) => panic!("{peer} waits"),
            Err(reason) => panic!("{peer} refused: {reason:?}"),
        }
    }

    fn waiting<T>(turn: Turn<T>) -> Waiting<T> {
        match turn {
            Turn::Ready(_) => panic!("given at once"),
            Turn::Waiting(waiting) => waiting,
        }
    }

    /// The turn if it has been given by now.
    fn given<T>(waiting: &mut Waiting<T>) -> Option<T> {
        waiting.granted.try_recv().ok()
    }

    fn assert_empty(gate: &ConnectionGate) {
        let state = gate.lock();
        assert_eq!(gate.open(), 0);
        assert_eq!((state.connections, state.handshakes), (0, 0));
        assert_eq!(
            (state.waiting_for_slots, state.waiting_for_handshakes),
            (0, 0)
        );
        assert!(state.peers.is_empty(), "no entry outlives its peer");
    }

    /// What the keeper does at each look.
    fn recheck(gate: &Arc<ConnectionGate>) {
        let mut state = gate.lock();
        let given = gate.give_turns(&mut state);
        gate.make_room(&mut state, Instant::now(), None);
        drop(state);
        given.into_iter().for_each(Given::hand_over);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_over_a_cap_waits_for_its_turn_and_is_refused_at_its_deadline() {
        let gate = Arc::new(ConnectionGate::new(3, 2, 2, 1));
        let first = slot(&gate, ip(1));
        let _second = slot(&gate, ip(1));
        let _third = slot(&gate, ip(2));
        // A request in progress on each: nothing may be displaced.
        let busy: Vec<_> = [&first, &_second, &_third]
            .iter()
            .map(|slot| slot.activity())
            .collect();
        busy.iter().for_each(|activity| activity.started());
        let mut over_peer_cap = waiting(gate.admit(ip(1)).unwrap());
        assert_eq!(over_peer_cap.refusal, Rejection::ConnectionsPerPeer);
        let over_total = gate.admit(ip(3)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let refused = over_total.until(deadline).await.err();
        assert_eq!(refused, Some(Rejection::Connections));
        assert!(given(&mut over_peer_cap).is_none());
        drop(first);
        let slot = given(&mut over_peer_cap).expect("the freed slot is its address's");
        drop((slot, over_peer_cap, _second, _third));
        assert_empty(&gate);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_address_takes_the_place_of_the_quietest_connection_of_the_one_holding_most() {
        let gate = Arc::new(ConnectionGate::new(4, 4, 4, 4));
        let many: Vec<_> = (0..3).map(|_| slot(&gate, ip(1))).collect();
        let other = slot(&gate, ip(2));
        // The first of `many` answers a request now: the second is quiet the longest.
        tokio::time::advance(Duration::from_secs(1)).await;
        many[0].activity().started();
        many[0].activity().ended();
        let turn = gate.admit(ip(3)).unwrap();
        assert!(!many[0].connection.is_displaced());
        assert!(many[1].connection.is_displaced(), "quiet the longest");
        assert!(!many[2].connection.is_displaced());
        assert!(
            !other.connection.is_displaced(),
            "holds one: as few as the newcomer will"
        );
        tokio::time::timeout(Duration::from_millis(10), many[1].displaced())
            .await
            .expect("told to close");
        let mut many = many;
        drop(many.remove(1));
        let newcomer = turn.until(Instant::now()).await.expect("its place");
        assert_eq!(gate.open(), 4);

        // One each: a fifth address would hold as many as the one giving way, so it waits.
        drop(many.remove(0));
        let fourth = slot(&gate, ip(4));
        let fifth = waiting(gate.admit(ip(5)).unwrap());
        tokio::time::advance(Duration::from_secs(5)).await;
        recheck(&gate);
        let displaced = gate
            .lock()
            .peers
            .values()
            .flat_map(|peer| &peer.connections)
            .filter(|held| held.connection.is_displaced())
            .count();
        assert_eq!(displaced, 0, "no churn between equals");
        drop((fifth, fourth, newcomer, many, other));
        assert_empty(&gate);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_just_opened_or_in_use_is_never_displaced() {
        let gate = Arc::new(ConnectionGate::new(2, 2, 2, 2));
        let fresh = slot(&gate, ip(1));
        let busy = slot(&gate, ip(1));
        busy.activity().started();
        let mut turn = waiting(gate.admit(ip(2)).unwrap());
        assert!(!fresh.connection.is_displaced(), "just accepted");
        tokio::time::advance(DISPLACEABLE_AFTER).await;
        recheck(&gate);
        assert!(
            fresh.connection.is_displaced(),
            "quiet since accept long enough"
        );
        assert!(!busy.connection.is_displaced(), "a request in progress");
        drop(fresh);
        assert!(given(&mut turn).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn over_its_own_cap_an_address_gives_way_to_itself_and_the_keeper_finds_the_room_later() {
        let gate = Arc::new(ConnectionGate::new(10, 2, 2, 2));
        let _keeper = AbortOnDrop(tokio::spawn(gate.clone().keep()));
        let older = slot(&gate, ip(1));
        tokio::time::advance(Duration::from_millis(10)).await;
        let newer = slot(&gate, ip(1));
        let turn = gate.admit(ip(1)).unwrap();
        // A request on the newer one after the third was accepted.
        tokio::time::advance(Duration::from_millis(90)).await;
        newer.activity().started();
        newer.activity().ended();
        let closer = async {
            newer.displaced().await;
            panic!("the newer one is not quiet the longest");
        };
        let closing = async {
            older.displaced().await;
            drop(older);
        };
        tokio::select! {
            _ = closer => {}
            _ = closing => {}
        }
        let third = turn
            .until(Instant::now() + Duration::from_secs(1))
            .await
            .expect("the place of its own quiet connection");
        // Quiet since it got its slot, not since it was accepted: the connection that
        // waited is not the next to give way.
        tokio::time::advance(Duration::from_secs(1)).await;
        let fourth = gate.admit(ip(1)).unwrap();
        assert!(newer.connection.is_displaced());
        assert!(!third.connection.is_displaced());
        drop((fourth, third, newer));
        assert_empty(&gate);
    }

    struct AbortOnDrop(tokio::task::JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn handshakes_over_the_per_address_cap_wait_for_turns_in_arrival_order() {
        let gate = Arc::new(ConnectionGate::new(64, 64, 256, 2));
        let slots: Vec<_> = (0..5).map(|_| slot(&gate, ip(1))).collect();
        let mut turns: Vec<_> = slots.iter().map(|slot| gate.handshake(slot)).collect();
        let ready: Vec<_> = turns
            .drain(..2)
            .map(|turn| match turn {
                Turn::Ready(permit) => permit,
                Turn::Waiting(_) => panic!("the first two handshake at once"),
            })
            .collect();
        let mut waiting: Vec<_> = turns.into_iter().map(waiting).collect();
        assert!(waiting.iter_mut().all(|turn| given(turn).is_none()));
        let mut permits = Vec::new();
        for permit in ready {
            drop(permit);
            permits.push(given(&mut waiting[permits.len()]).expect("the next in line"));
        }
        assert!(given(&mut waiting[2]).is_none());
        drop(permits);
        assert!(given(&mut waiting[2]).is_some());
        drop((waiting, slots));
        assert_empty(&gate);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_overall_handshake_cap_the_longest_handshake_of_the_address_running_most_gives_way(
    ) {
        let gate = Arc::new(ConnectionGate::new(64, 64, 4, 3));
        let stalled: Vec<_> = (0..3).map(|_| slot(&gate, ip(1))).collect();
        let stalled_permits: Vec<_> = stalled.iter().map(|slot| gate.handshake(slot)).collect();
        tokio::time::advance(Duration::from_secs(1)).await;
        let other = slot(&gate, ip(2));
        let _other_permit = gate.handshake(&other);
        let newcomer = slot(&gate, ip(3));
        let mut turn = waiting(gate.handshake(&newcomer));
        assert!(
            stalled[0].connection.is_displaced(),
            "the oldest of the most"
        );
        assert!(!stalled[1].connection.is_displaced());
        assert!(
            !other.connection.is_displaced(),
            "runs one: as many as the newcomer will"
        );
        let mut stalled_permits = stalled_permits;
        drop(stalled_permits.remove(0));
        assert!(
            given(&mut turn).is_some(),
            "the freed turn is the newcomer's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded_and_shared_like_the_slots() {
        let gate = Arc::new(ConnectionGate::new(3, 2, 2, 2));
        let held: Vec<_> = (0..2).map(|_| slot(&gate, ip(1))).collect();
        held.iter().for_each(|slot| slot.activity().started());
        let mut queued: Vec<_> = (0..2).map(|_| gate.admit(ip(1)).unwrap()).collect();
        assert_eq!(
            gate.admit(ip(1)).err(),
            Some(Rejection::ConnectionsPerPeer),
            "as many waiting as it may hold"
        );
        let third = slot(&gate, ip(2));
        third.activity().started();
        let _queued_too = gate.admit(ip(3)).unwrap();
        // Three waiting, as many as may be open: the address with two waiting gives up its
        // longest-waiting place to one with none.
        let _fourth = gate.admit(ip(4)).unwrap();
        let oldest = queued.remove(0);
        assert_eq!(
            oldest
                .until(Instant::now() + Duration::from_secs(5))
                .await
                .err(),
            Some(Rejection::ConnectionsPerPeer),
            "refused at once"
        );
        assert_eq!(
            gate.admit(ip(5)).err(),
            Some(Rejection::Connections),
            "one waiting each: no one gives way"
        );
        drop((held, queued, third, _queued_too, _fourth));
        assert_empty(&gate);
    }
}
