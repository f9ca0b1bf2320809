//! STUB: passwd_file backend, implementation pending.
