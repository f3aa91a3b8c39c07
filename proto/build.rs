//! Compiles `proto/fleetbench/v1/*.proto` with protox (pure Rust), so no system `protoc`
//! is needed, then generates prost messages and tonic clients/servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/fleetbench/v1/fleetbench.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
