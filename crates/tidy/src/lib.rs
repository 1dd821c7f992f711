//! The tidy test of flowstate: habits that keep the code base tidy, checked inside
//! `cargo test` (`tests/tidy.rs`) so that CI enforces them. This library is empty; the crate
//! exists for its test and is never published.
//!
//! The test walks the repository and fails, listing every offender, when:
//! - a `.rs` file under `crates/` does not open with a `//!` comment on its first line saying
//!   what the file owns;
//! - a `.md` or `.rs` file speaks of the project's history instead of the system as it is
//!   (a part said to be unbuilt, a status "in progress", an issue number in parentheses: the
//!   history is in git);
//! - a function in `crates/*/src` is longer than the budget (150 lines, from its `fn` line to
//!   its closing brace), unless the test's allow list names it, and that list only shrinks;
//! - `ARCHITECTURE.md` does not name a crate of `crates/`;
//! - the workspace's `rust-version` is not the toolchain pinned in `rust-toolchain.toml`
//!   (so the CI build with the pinned toolchain is the build with the minimum supported one).
