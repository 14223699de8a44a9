//! The `openseek` binary; the command line is `openseek::cli`.

// The allocator DataFusion's own CLI uses (see Cargo.toml); `--features system-allocator` leaves the
// system's, for heap profilers (heaptrack, valgrind) that see only malloc.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    openseek::cli::main()
}
