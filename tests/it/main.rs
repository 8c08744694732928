//! Integration tests: one binary, each module against real daemon processes in temp dirs.

mod batch;
mod cli;
mod constants;
mod crash;
mod edges;
mod fixtures;
mod formats;
mod hostile;
mod lifecycle;
mod props;
mod races;
mod readers;
mod roundtrip;
mod semantics;
mod support;
mod vectors;
