//! Test-only: a WASI command component, so tests can load a component that targets
//! another world and check the error names both worlds.

fn main() {
    println!("hello from a command, not a check");
}
