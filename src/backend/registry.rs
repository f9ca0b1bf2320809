//! STUB: registry backend, implementation pending.
