//! The `openseek` binary; the command line is `openseek::cli`.

// The allocator DataFusion's own CLI uses (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    openseek::cli::main()
}
