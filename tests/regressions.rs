//! One test per fixed bug.
//!
//! When a bug in pop3d is fixed, add a test here that fails without the fix:
//! name it after what went wrong (`retr_of_message_ending_in_cr_reported_wrong_size`),
//! start with a doc comment giving the date, the symptom a user saw and the
//! commit of the fix, and use the harness in `common` (real binary, real
//! TCP) unless the bug cannot be reached from outside the process. Tests
//! here are never removed: they are the record that a bug stays fixed.
//!
//! Empty so far.
