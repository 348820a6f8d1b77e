//! Deterministic simulation of the real services on a simulated network.
