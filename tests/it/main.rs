//! Integration tests: one binary, each module against real daemon processes in temp dirs.

mod cli;
mod hostile;
mod lifecycle;
mod races;
mod roundtrip;
mod support;
