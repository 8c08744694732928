//! The daemon's side of the socket: binding the listener (owner-only), accepting connections, refusing peers
//! of other users, the handshake, and one handler per request. It never encodes or writes images: it
//! validates, records and queues.

mod connection;
mod handlers;
mod listener;
mod slots;

pub use handlers::{Context, Limits};
pub use listener::{BindError, bind, connect_name, serve};
