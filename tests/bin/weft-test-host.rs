//! The `weft` binary, built by the test crate so that tests can run the
//! host as a process of its own (and kill it).

fn main() -> std::process::ExitCode {
    weft_host::cli::main()
}
