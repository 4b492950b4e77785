//! Compiles the gRPC contract in `proto/` with protox (pure Rust: no protoc) and generates the
//! prost messages and tonic client and server with tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/apache/rocketmq/v2/definition.proto",
        "proto/apache/rocketmq/v2/service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Prost's codec, sizing its buffer before it writes (see `src/codec.rs`).
        .codec_path("crate::codec::SizedCodec")
        // A message's body as `Bytes`: sent without a copy of the caller's body, and read as a
        // slice of the request.
        .bytes(".apache.rocketmq.v2.Message.body")
        .compile_fds(descriptors)?;
    Ok(())
}
