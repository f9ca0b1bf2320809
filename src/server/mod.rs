//! The event loop and worker pool. STUB.
