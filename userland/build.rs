//! Link the programs as classic static executables (`ET_EXEC` at 0x400000, entry `_start`).
//!
//! `x86_64-unknown-none` links static-PIE by default, which needs a loader to relocate it; our
//! programs are loaded by cowlab's `execve` (and by Linux's, for the host check in
//! `cargo xtask test`) exactly where they were linked, like a static binary from `gcc -static`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-none") {
        return;
    }
    for arg in [
        "--no-pie",
        "-static",
        "--entry=_start",
        // The conventional start of a non-PIE x86_64 executable (ld.bfd's default; lld's is
        // 0x200000).
        "--image-base=0x400000",
        "--build-id=none",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
