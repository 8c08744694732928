//! Integration tests: one binary, each module against real daemon processes in temp dirs.

mod avif;
mod batch;
mod cli;
mod constants;
mod crash;
mod edges;
mod fixtures;
mod formats;
mod hostile;
mod jxl;
mod lifecycle;
mod props;
mod races;
mod readers;
mod roundtrip;
// Starts s3s-fs, a Linux binary here; the Windows build compiles the S3 code, its tests run on Linux.
#[cfg(unix)]
mod s3;
mod semantics;
mod support;
mod vectors;
