//! The shared brute-force defences: per-address failure penalties and
//! per-address and per-user failure caps.
//!
//! [`AbuseGuard`] implements the session's
//! [`LoginGuard`](crate::protocol::guard::LoginGuard). Every worker calls it
//! around every credentials check, so it is one small table behind a mutex
//! (each call holds it for a hash lookup, never across the backend call).
//!
//! - **Penalty.** A failed login is answered after
//!   `auth_failure_delay_ms`, doubled for each earlier failure from the
//!   same address, up to `auth_failure_delay_max_ms`. A success from that
//!   address forgives it. The loop holds the delay on a timer; no thread
//!   sleeps.
//! - **Caps.** After `max_auth_failures_per_ip` failures from one address,
//!   or `max_auth_failures_per_user` for one user name, further attempts
//!   are refused without asking the backend, so the password is not even
//!   checked. Failures are forgotten once `auth_failure_window_secs` have
//!   passed without another one.
//! - **Addresses.** IPv4 addresses count one by one; IPv6 addresses by
//!   their /64, since one client commonly owns a whole /64 and could
//!   otherwise pick a fresh address for every guess.
//! - **Trusted networks** (`trusted_networks`) are exempt from all of it:
//!   their failures get the base delay and count nowhere.
//! - **Memory.** Each table holds at most [`MAX_TRACKED`] entries. When
//!   full, expired entries go first, then the least recently failing
//!   quarter, so an attacker with many addresses or names cannot grow it;
//!   the price is that such a flood can make the guard forget older
//!   offenders early.

use super::stats::Metrics;
use crate::config::{Config, Network};
use crate::protocol::guard::{Blocked, LoginGuard, Refusal};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Entries per table (addresses, user names). About 100 bytes each, so a
/// few megabytes at most.
pub const MAX_TRACKED: usize = 65_536;

/// The settings the guard applies; replaced as a whole on SIGHUP.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Delay after the first failure from an address.
    pub base_delay: Duration,
    /// Most the doubling delay grows to.
    pub max_delay: Duration,
    /// Failures from one address before it is refused; 0 = no cap.
    pub max_per_ip: u32,
    /// Failures for one user before it is refused; 0 = no cap.
    pub max_per_user: u32,
    /// Quiet time after which failures are forgotten.
    pub window: Duration,
    /// Networks the guard leaves alone.
    pub trusted: Vec<Network>,
}

impl Policy {
    /// The policy a configuration asks for.
    pub fn from_config(config: &Config) -> Policy {
        let limits = &config.limits;
        Policy {
            base_delay: Duration::from_millis(limits.auth_failure_delay_ms),
            max_delay: Duration::from_millis(
                limits
                    .auth_failure_delay_max_ms
                    .max(limits.auth_failure_delay_ms),
            ),
            max_per_ip: limits.max_auth_failures_per_ip,
            max_per_user: limits.max_auth_failures_per_user,
            window: Duration::from_secs(limits.auth_failure_window_secs),
            trusted: config.trusted_networks.clone(),
        }
    }

    /// The delay after the `failures`-th failure in a row: the base,
    /// doubled for each earlier one, capped.
    fn delay_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }
}

/// What an address's failures are counted under: the address itself for
/// IPv4 (also when it arrives IPv4-mapped), the /64 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6Prefix(u64),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Failures of one address or user name.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures since the record was last forgiven or forgotten.
    failures: u32,
    /// When the latest failure happened; the window counts from here.
    last: Instant,
}

/// A bounded map of failure records.
struct Tracker<K> {
    records: HashMap<K, Record>,
    /// Most entries kept (see [`MAX_TRACKED`]).
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Tracker<K> {
    fn new(capacity: usize) -> Self {
        Tracker {
            records: HashMap::new(),
            capacity,
        }
    }

    /// Failures still within the window.
    fn failures(&self, key: &K, now: Instant, window: Duration) -> u32 {
        match self.records.get(key) {
            Some(r) if now.saturating_duration_since(r.last) <= window => r.failures,
            _ => 0,
        }
    }

    /// Counts one more failure and returns the new count.
    fn fail(&mut self, key: K, now: Instant, window: Duration) -> u32 {
        let current = self.failures(&key, now, window);
        if current == 0 && !self.records.contains_key(&key) {
            self.make_room(now, window);
        }
        let failures = current.saturating_add(1);
        self.records.insert(
            key,
            Record {
                failures,
                last: now,
            },
        );
        failures
    }

    fn forgive(&mut self, key: &K) {
        self.records.remove(key);
    }

    /// Keeps the table below its capacity before an insertion.
    fn make_room(&mut self, now: Instant, window: Duration) {
        if self.records.len() < self.capacity {
            return;
        }
        self.records
            .retain(|_, r| now.saturating_duration_since(r.last) <= window);
        if self.records.len() < self.capacity {
            return;
        }
        // Still full of live records: drop the quarter that failed least
        // recently. Sorting once per quarter of the capacity keeps the
        // cost per insertion small.
        let mut ages: Vec<Instant> = self.records.values().map(|r| r.last).collect();
        let cut = ages.len() / 4;
        ages.select_nth_unstable(cut);
        let threshold = ages[cut];
        self.records.retain(|_, r| r.last > threshold);
    }

    fn len(&self) -> usize {
        self.records.len()
    }
}

/// The tables and the policy, under one lock.
struct State {
    policy: Policy,
    by_address: Tracker<AddressKey>,
    by_user: Tracker<String>,
}

/// Per-address and per-user failure tracking shared by all sessions.
pub struct AbuseGuard {
    state: Mutex<State>,
    /// Login outcomes and backend latency, for the stats endpoint.
    metrics: Arc<Metrics>,
}

impl AbuseGuard {
    pub fn new(policy: Policy, metrics: Arc<Metrics>) -> AbuseGuard {
        AbuseGuard::with_capacity(policy, metrics, MAX_TRACKED)
    }

    fn with_capacity(policy: Policy, metrics: Arc<Metrics>, capacity: usize) -> AbuseGuard {
        AbuseGuard {
            state: Mutex::new(State {
                policy,
                by_address: Tracker::new(capacity),
                by_user: Tracker::new(capacity),
            }),
            metrics,
        }
    }

    /// Applies a new policy (SIGHUP); the counts so far are kept.
    pub fn set_policy(&self, policy: Policy) {
        self.lock().policy = policy;
    }

    /// Entries in the address and user tables (for tests and the stats).
    pub fn tracked(&self) -> (usize, usize) {
        let state = self.lock();
        (state.by_address.len(), state.by_user.len())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, nothing that
        // could be inconsistent: carry on with them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit_at(&self, ip: IpAddr, user: &str, now: Instant) -> Result<(), Refusal> {
        let state = self.lock();
        let policy = &state.policy;
        if policy.is_trusted(ip) {
            return Ok(());
        }
        let over = |cap: u32, failures: u32| cap > 0 && failures >= cap;
        let blocked = if over(
            policy.max_per_ip,
            state
                .by_address
                .failures(&AddressKey::of(ip), now, policy.window),
        ) {
            Some(Blocked::Address)
        } else if over(
            policy.max_per_user,
            state
                .by_user
                .failures(&user.to_string(), now, policy.window),
        ) {
            Some(Blocked::User)
        } else {
            None
        };
        match blocked {
            None => Ok(()),
            Some(blocked) => {
                self.metrics.login_refused();
                Err(Refusal {
                    blocked,
                    delay: policy.max_delay,
                })
            }
        }
    }

    fn failed_at(&self, ip: IpAddr, user: &str, now: Instant) -> Duration {
        let mut state = self.lock();
        let State {
            policy,
            by_address,
            by_user,
        } = &mut *state;
        if policy.is_trusted(ip) {
            return policy.base_delay;
        }
        let failures = by_address.fail(AddressKey::of(ip), now, policy.window);
        if policy.max_per_user > 0 {
            by_user.fail(user.to_string(), now, policy.window);
        }
        policy.delay_after(failures)
    }
}

impl LoginGuard for AbuseGuard {
    fn admit(&self, ip: IpAddr, user: &str) -> Result<(), Refusal> {
        self.admit_at(ip, user, Instant::now())
    }

    fn failed(&self, ip: IpAddr, user: &str, took: Duration) -> Duration {
        self.metrics.login_failed(took);
        self.failed_at(ip, user, Instant::now())
    }

    fn succeeded(&self, ip: IpAddr, _user: &str, took: Duration) {
        self.metrics.login_succeeded(took);
        self.lock().by_address.forgive(&AddressKey::of(ip));
    }
}

/// The IPv6 /64 an address belongs to, for log lines and tests.
pub fn prefix64(ip: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(ip) & !((1u128 << 64) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_per_ip: 5,
            max_per_user: 3,
            window: Duration::from_secs(60),
            trusted: vec![Network::try_from("10.0.0.0/8".to_string()).unwrap()],
        }
    }

    fn guard(policy: Policy) -> AbuseGuard {
        AbuseGuard::new(policy, Arc::new(Metrics::default()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_delay_doubles_per_failure_up_to_the_cap_and_a_success_resets_it() {
        let g = guard(Policy {
            max_per_ip: 0,
            max_per_user: 0,
            ..policy()
        });
        let now = Instant::now();
        let a = ip("192.0.2.1");
        let delays: Vec<Duration> = (0..5).map(|_| g.failed_at(a, "u", now)).collect();
        assert_eq!(delays, [MS(100), MS(200), MS(400), MS(400), MS(400)]);
        // Another address has its own count.
        assert_eq!(g.failed_at(ip("192.0.2.2"), "u", now), MS(100));
        g.succeeded(a, "u", Duration::ZERO);
        assert_eq!(g.failed_at(a, "u", now), MS(100));
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_window() {
        let g = guard(policy());
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..5 {
            g.failed_at(a, &format!("user{i}"), now);
        }
        assert!(g.admit_at(a, "x", now).is_err());
        let later = now + Duration::from_secs(61);
        assert_eq!(g.admit_at(a, "x", later), Ok(()));
        assert_eq!(g.failed_at(a, "x", later), MS(100));
    }

    #[test]
    fn caps_refuse_the_address_and_the_user_separately() {
        let g = guard(Policy {
            max_per_user: 10,
            ..policy()
        });
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..4 {
            g.failed_at(a, &format!("name{i}"), now);
            assert_eq!(g.admit_at(a, "alice", now), Ok(()));
        }
        g.failed_at(a, "name4", now);
        assert_eq!(
            g.admit_at(a, "alice", now),
            Err(Refusal {
                blocked: Blocked::Address,
                delay: MS(400)
            })
        );
        // Other addresses are not affected.
        assert_eq!(g.admit_at(ip("192.0.2.9"), "alice", now), Ok(()));

        let g = guard(policy());
        for i in 0..3 {
            assert_eq!(
                g.admit_at(ip(&format!("198.51.100.{i}")), "bob", now),
                Ok(())
            );
            g.failed_at(ip(&format!("198.51.100.{i}")), "bob", now);
        }
        let refused = g.admit_at(ip("203.0.113.7"), "bob", now).unwrap_err();
        assert_eq!(refused.blocked, Blocked::User);
        assert_eq!(g.admit_at(ip("203.0.113.7"), "carol", now), Ok(()));
    }

    #[test]
    fn trusted_networks_are_exempt() {
        let g = guard(policy());
        let now = Instant::now();
        let proxy = ip("10.1.2.3");
        for _ in 0..20 {
            assert_eq!(g.failed_at(proxy, "bob", now), MS(100));
        }
        assert_eq!(g.admit_at(proxy, "bob", now), Ok(()));
        // Its failures did not count against the user elsewhere either.
        assert_eq!(g.admit_at(ip("192.0.2.1"), "bob", now), Ok(()));
        assert_eq!(g.tracked(), (0, 0));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let g = guard(policy());
        let now = Instant::now();
        g.failed_at(ip("2001:db8:1:2::1"), "u", now);
        assert_eq!(g.failed_at(ip("2001:db8:1:2:ffff::9"), "u", now), MS(200));
        assert_eq!(g.failed_at(ip("2001:db8:1:3::1"), "u", now), MS(100));
        g.failed_at(ip("192.0.2.1"), "u", now);
        assert_eq!(g.failed_at(ip("::ffff:192.0.2.1"), "u", now), MS(200));
        assert_eq!(
            prefix64("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn tables_stay_bounded_under_a_flood_of_addresses_and_names() {
        let g = AbuseGuard::with_capacity(policy(), Arc::new(Metrics::default()), 1000);
        let start = Instant::now();
        for i in 0..20_000u32 {
            let now = start + Duration::from_millis(u64::from(i));
            let addr = IpAddr::from((0x0a00_0000u32 ^ 0x4000_0000 ^ i).to_be_bytes());
            g.failed_at(addr, &format!("user{i}"), now);
            let (addresses, users) = g.tracked();
            assert!(addresses <= 1000 && users <= 1000, "{addresses} {users}");
        }
        // The most recent offender is still remembered.
        let last = IpAddr::from((0x0a00_0000u32 ^ 0x4000_0000 ^ 19_999).to_be_bytes());
        let now = start + Duration::from_millis(20_000);
        assert_eq!(g.failed_at(last, "x", now), MS(200));
    }
}
