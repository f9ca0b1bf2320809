//! STUB: maildir backend, implementation pending.
