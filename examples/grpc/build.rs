//! Compiles the example's proto with protox, so no system `protoc` is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/generate.proto");
    let descriptors = match protox::compile(["generate.proto"], ["proto"]) {
        Ok(descriptors) => descriptors,
        Err(error) => panic!("proto/generate.proto does not compile: {error}"),
    };
    if let Err(error) = tonic_prost_build::configure().compile_fds(descriptors) {
        panic!("cannot generate the gRPC code: {error}");
    }
}
