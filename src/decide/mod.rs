//! The sans-IO decision engine (SPEC §5).
