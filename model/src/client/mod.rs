//! The client device: connects through the load balancer with exponential backoff and full
//! jitter, catches up on its inbox before showing live messages, shows each message once
//! and in id order per conversation, acknowledges only what it has shown, keeps its inbox
//! cursor, and keeps the ticks of its own messages.
//!
//! One `Devices` holds the devices of one client process (a population shard) in a flat
//! vector of 20-byte records, with the transient state (catch-up hold buffers) in a side
//! table that only devices catching up occupy. The simulator drives it with the workload
//! (the user opens or closes the app, sends, reads), the network's frames, faults (the
//! network is lost or back) and the timers it asked for; it decides nothing itself.

mod backoff;
mod balancer;
mod devices;
mod displayed;
mod sent;

pub use backoff::Backoff;
pub use balancer::{Balancer, BalancerConfig, Placement};
pub use devices::{ClientDevice, DeviceConfig, DeviceInput, DeviceOutput, DeviceState, Devices, Layout, UserSettings};
pub use displayed::{Displayed, Showing, SHOWN_EXACT, SHOWN_EXACT_GROUP};
pub use sent::SentMessages;
