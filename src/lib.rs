//! Luna Daemon: a same-machine image-saving daemon for ComfyUI.
//!
//! Clients put pixels into shared-memory segments and send a small MessagePack descriptor over a local socket;
//! the daemon's worker pool converts, encodes and writes each image atomically, never overwriting.
//!
//! Modules and what each owns (dependencies point one way, leaves first):
//! - [`protocol`]: frames, messages, versions, error codes (leaf).
//! - [`platform`]: the OS calls that differ between Unix and Windows (leaf; `unsafe` for Win32).
//! - [`shm`]: segments: names, header, daemon reads, client mappings (`unsafe` for the mapping).
//! - [`encode`]: pure pixel conversion and encoding.
//! - [`output`]: path confinement and atomic no-clobber writes.
//! - [`s3`]: S3-compatible object storage as an output root (conditional-create uploads, staged bytes).
//! - [`jobs`]: submission validation, job ids, the job table.
//! - [`workers`]: the scaling, fair worker pool.
//! - [`ipc`]: listener, peer checks, handshake, request handlers.
//! - [`config`] and [`paths`]: settings and default locations.
//! - [`janitor`]: removes what dead processes left behind.
//! - [`daemon`]: wires everything together.
//! - [`client`]: the public client API.
//! - [`doctor`]: set-up checks with explanations.
//! - [`synthetic`]: generated realistic test images.
//! - [`transport`]: socket naming shared by the daemon's `ipc` and the `client` (leaf).
//! - [`fault`]: test-only fault injection (holds and injected failures; no-ops without `test-hooks`).

#![deny(unsafe_code)]

pub mod client;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod encode;
pub mod fault;
pub mod ipc;
pub mod janitor;
pub mod jobs;
pub mod output;
pub mod paths;
pub mod platform;
pub mod protocol;
pub mod s3;
pub mod shm;
pub mod synthetic;
pub mod transport;
pub mod workers;
