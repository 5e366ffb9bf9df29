//! The `xpod` binary. Everything happens in [`xpod_node::cli`].

fn main() -> std::process::ExitCode {
    xpod_node::cli::main()
}
