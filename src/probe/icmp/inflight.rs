//! The engine-wide table of echo requests in flight, and the send pacer.
//!
//! Owns nothing on disk. The table is preallocated at engine start and indexed by the low bits
//! of a 32-bit key handed out by a counter; a slot holds one word `key << 32 | received` (the
//! receive time in 100 ns ticks, modulo 2^32, 0 = no answer yet) so a reply is recorded with a
//! single compare-and-swap, only if the slot still belongs to that key and has no answer yet. A
//! reply to a key whose slot was reused is therefore dropped, never attributed to the newer ping.
//! The send time sits beside it and may be set after the slot was claimed (a batch of requests
//! is claimed before one `sendmmsg` and timed after it), because the RTT is computed when it is
//! read, not when the reply arrives. No locks and no allocation per packet.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Times are stored in ticks of 100 ns.
const TICK_NANOS: u64 = 100;
/// The largest reservation (and `sendmmsg` batch) of the pacer.
pub const MAX_CHUNK: u32 = 256;

/// The in-flight table.
pub struct InflightTable {
    /// `key << 32 | received_ticks`; 0 = no answer yet.
    states: Box<[AtomicU64]>,
    /// Send time of the slot's ping, nanoseconds since `epoch`.
    sent_nanos: Box<[AtomicU64]>,
    mask: u32,
    next_key: AtomicU32,
    epoch: Instant,
}

impl InflightTable {
    /// A table big enough that a key is not reused before `2 * timeout` at `send_rate` packets
    /// per second (bounded to 2^16..=2^22 slots, 16 bytes each).
    pub fn new(send_rate: u32, timeout: Duration) -> InflightTable {
        let needed = (f64::from(send_rate) * timeout.as_secs_f64() * 2.0).ceil() as u64;
        let slots = needed.clamp(1 << 16, 1 << 22).next_power_of_two();
        let states = (0..slots).map(|_| AtomicU64::new(0)).collect();
        let sent_nanos = (0..slots).map(|_| AtomicU64::new(0)).collect();
        InflightTable {
            states,
            sent_nanos,
            mask: (slots - 1) as u32,
            next_key: AtomicU32::new(0),
            epoch: Instant::now(),
        }
    }

    /// Reserves `count` consecutive keys (wrapping at 2^32).
    pub fn reserve_keys(&self, count: u32) -> u32 {
        self.next_key.fetch_add(count, Ordering::Relaxed)
    }

    /// Claims the slot of `key` for a ping about to be sent now and sets its send time to now;
    /// returns it. Call right before `sendto`.
    #[cfg(test)]
    pub fn mark_sent(&self, key: u32) -> Instant {
        self.claim(key);
        let now = Instant::now();
        self.set_sent(key, now);
        now
    }

    /// Claims the slot of `key` for a ping about to be sent: from now on a reply to `key` is
    /// recorded. Call before the request can leave; then [`InflightTable::set_sent`].
    pub fn claim(&self, key: u32) {
        let index = (key & self.mask) as usize;
        self.states[index].store(u64::from(key) << 32, Ordering::SeqCst);
    }

    /// Sets the send time of the claimed `key` (before its RTT is read).
    pub fn set_sent(&self, key: u32, at: Instant) {
        let index = (key & self.mask) as usize;
        self.sent_nanos[index].store(self.nanos_since_epoch(at), Ordering::SeqCst);
    }

    /// Records a reply to `key` received at `received`; ignored when the slot belongs to another
    /// key or already holds an answer (duplicates keep the first).
    pub fn record_reply(&self, key: u32, received: Instant) {
        let index = (key & self.mask) as usize;
        let claimed = u64::from(key) << 32;
        let ticks = ((self.nanos_since_epoch(received) / TICK_NANOS) as u32).max(1);
        let _ = self.states[index].compare_exchange(
            claimed,
            claimed | u64::from(ticks),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The RTT of `key` (at least one tick), if it was answered and the slot was not reused
    /// since. RTTs up to 2^31 ticks (~214 s) are exact; timeouts are far shorter.
    pub fn rtt(&self, key: u32) -> Option<Duration> {
        let index = (key & self.mask) as usize;
        let state = self.states[index].load(Ordering::SeqCst);
        let received = (state & u64::from(u32::MAX)) as u32;
        if state >> 32 != u64::from(key) || received == 0 {
            return None;
        }
        let sent = (self.sent_nanos[index].load(Ordering::SeqCst) / TICK_NANOS) as u32;
        let ticks = (received.wrapping_sub(sent) as i32).max(1);
        Some(Duration::from_nanos(ticks as u64 * TICK_NANOS))
    }

    /// Number of slots (keys in flight without reuse).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.states.len()
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// Engine-wide pacing: a token bucket shared by every run, at most `rate` sends per second with
/// bursts of at most [`Pacer::chunk`] packets. Lock-free: a reservation advances a virtual clock.
pub struct Pacer {
    period_nanos: u64,
    burst_nanos: u64,
    chunk: u32,
    /// Earliest time the next reservation may start, nanoseconds since `epoch`.
    next_nanos: AtomicU64,
    epoch: Instant,
}

impl Pacer {
    pub fn new(rate: u32) -> Pacer {
        let rate = rate.max(1);
        let period_nanos = 1_000_000_000u64.div_ceil(u64::from(rate));
        // About 5 ms of packets per reservation (250 at the default 50,000/s), sent with one
        // sendmmsg: few sleeps and syscalls, bursts still small (16 KB of requests).
        let chunk = (rate / 200).clamp(1, MAX_CHUNK);
        Pacer {
            period_nanos,
            burst_nanos: period_nanos * u64::from(chunk),
            chunk,
            next_nanos: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// How many packets one reservation should cover.
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// Reserves `count` sends; returns when they may go out (sleep until then, then send them).
    pub fn reserve(&self, count: u32) -> Instant {
        let cost = self.period_nanos * u64::from(count);
        let now = Instant::now().saturating_duration_since(self.epoch).as_nanos() as u64;
        let mut current = self.next_nanos.load(Ordering::Relaxed);
        loop {
            let start = current.max(now.saturating_sub(self.burst_nanos));
            match self
                .next_nanos
                .compare_exchange_weak(current, start + cost, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return self.epoch + Duration::from_nanos(start),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_recorded_once_for_the_key_that_owns_the_slot() {
        let table = InflightTable::new(1000, Duration::from_secs(1));
        let key = table.reserve_keys(1);
        let sent = table.mark_sent(key);
        assert_eq!(table.rtt(key), None);
        table.record_reply(key, sent + Duration::from_micros(50));
        table.record_reply(key, sent + Duration::from_millis(900));
        assert_eq!(table.rtt(key), Some(Duration::from_micros(50)));
    }

    #[test]
    fn stale_reply_after_slot_reuse_is_not_attributed_to_the_new_ping() {
        let table = InflightTable::new(1000, Duration::from_secs(1));
        let old = 7u32;
        let new = old + table.capacity() as u32;
        table.mark_sent(old);
        let sent = table.mark_sent(new);
        table.record_reply(old, sent + Duration::from_micros(10));
        assert_eq!(table.rtt(new), None);
        assert_eq!(table.rtt(old), None);
        table.record_reply(new, sent + Duration::from_micros(20));
        assert_eq!(table.rtt(new), Some(Duration::from_micros(20)));
    }

    #[test]
    fn pacer_spaces_reservations_by_the_rate() {
        let pacer = Pacer::new(1000);
        let chunk = pacer.chunk();
        let first = pacer.reserve(chunk);
        let mut last = first;
        for _ in 0..9 {
            last = pacer.reserve(chunk);
        }
        // Ten reservations of `chunk` packets at 1000/s: the last starts 9 * chunk ms later
        // than the first (the bucket may let the first start a burst early).
        assert!(last.duration_since(first) >= Duration::from_millis(9 * u64::from(chunk)));
    }
}
