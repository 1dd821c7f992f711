//! Support for tests that need real processes. The binaries in `src/bin` are child programs
//! that tests start and SIGKILL; nothing here is part of flowstate's API.

pub mod mix;
