//! A counting semaphore that bounds how many helper programs run at once.
//!
//! A login flood must not become a fork bomb: each login needs a permit to
//! start its helper, and a login that cannot get one within its time budget
//! fails temporarily instead of queueing without end.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Permits to run a helper; see the module docs.
#[derive(Debug)]
pub(crate) struct Permits {
    /// Permits not taken right now.
    available: Mutex<usize>,
    /// Signalled each time a permit comes back.
    returned: Condvar,
}

/// One taken permit; dropping it gives it back, on every path out of a
/// login (unwinding included).
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    /// Where the permit goes back to.
    permits: &'a Permits,
}

impl Permits {
    /// `count` permits, all available.
    pub(crate) fn new(count: usize) -> Permits {
        Permits {
            available: Mutex::new(count),
            returned: Condvar::new(),
        }
    }

    /// The counter, ignoring poisoning: it is only ever changed by one
    /// increment or decrement, so a panic cannot leave it half-updated.
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.available
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a permit, waiting until `deadline` at most; `None` if none came
    /// free by then.
    pub(crate) fn acquire(&self, deadline: Instant) -> Option<Permit<'_>> {
        let mut available = self.lock();
        while *available == 0 {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            available = self
                .returned
                .wait_timeout(available, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        *available -= 1;
        Some(Permit { permits: self })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.permits.lock() += 1;
        self.permits.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[test]
    fn no_more_than_the_count_are_out_at_once() {
        let permits = Permits::new(2);
        let first = permits.acquire(soon()).unwrap();
        let second = permits.acquire(soon()).unwrap();
        assert!(permits.acquire(soon()).is_none());
        drop(first);
        let third = permits.acquire(soon()).unwrap();
        assert!(permits.acquire(soon()).is_none());
        drop((second, third));
        assert_eq!(*permits.lock(), 2);
    }

    #[test]
    fn a_deadline_in_the_past_takes_a_free_permit_but_never_waits() {
        let permits = Permits::new(1);
        let past = Instant::now();
        let held = permits.acquire(past).unwrap();
        assert!(permits.acquire(past).is_none());
        drop(held);
    }

    #[test]
    fn a_waiter_gets_the_permit_given_back() {
        let permits = Arc::new(Permits::new(1));
        let held = permits.acquire(soon()).unwrap();
        let waiter = {
            let permits = Arc::clone(&permits);
            std::thread::spawn(move || {
                permits
                    .acquire(Instant::now() + Duration::from_secs(60))
                    .is_some()
            })
        };
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
