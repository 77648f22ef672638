//! swc recurses per level of the syntax tree and, in wasm32, has no
//! `stacker` to grow its stack. Its frames live in two stacks: wasm's own
//! (the engine's `max_wasm_stack`) and the shadow stack in linear memory,
//! 1 MiB by default, which took about 600 nested brackets. 16 MiB takes
//! more than the engine's stack allows; `src/depth.rs` refuses deeper
//! sources before either runs out. Pages of it that a request never
//! touches cost nothing.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=16777216");
    }
}
