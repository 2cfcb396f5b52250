//! The crate's one error enum: operating errors, the inputs a caller can get wrong from a
//! scenario or a command line. Programmer errors (a broken invariant) assert instead.

use std::fmt;

/// An input the model refuses, with what was wrong with it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ModelError {
    /// A rate or a time that is NaN, infinite or out of range; `must` says what it must be.
    InvalidQuantity { name: &'static str, value: f64, must: &'static str },
    /// A server count outside `1..=MMC_SERVERS_MAX`.
    InvalidServers { servers: u32 },
    /// A queue offered as much work as it can serve or more (utilisation >= 1): it has no
    /// steady state, its queue grows without bound, and no steady-state formula applies.
    Unstable { utilisation: f64 },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ModelError::InvalidQuantity { name, value, must } => write!(f, "{name} is {value}, but must be {must}"),
            ModelError::InvalidServers { servers } => {
                write!(f, "{servers} servers, but a queue needs 1 to {} servers", crate::MMC_SERVERS_MAX)
            }
            ModelError::Unstable { utilisation } => write!(
                f,
                "utilisation is {utilisation:.4}, but must be below 1: the queue would grow without bound \
                 (add servers or lower the load)"
            ),
        }
    }
}

impl std::error::Error for ModelError {}
