//! The real services around the core: scheduler, worker, gateway and store.
