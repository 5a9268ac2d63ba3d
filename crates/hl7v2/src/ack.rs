//! Placeholder replaced below.
pub struct Ack;
pub struct AckCode;
