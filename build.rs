//! Release builds for Linux lay out the functions a running webhook executes side by side
//! (`link/hot-text.ld`, made by `hack/hot-text.sh`): code is paged in 64 KiB at a time, so
//! scattered, they would make nearly the whole binary resident. `PIW_HOT_TEXT=0` turns this
//! off, for a linker that does not take GNU linker scripts with `INSERT` (lld and GNU ld do).

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-env-changed=PIW_HOT_TEXT");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let linux = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let wanted = env::var("PIW_HOT_TEXT").as_deref() != Ok("0");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/hot-text.ld");
    if linux && release && wanted && script.exists() {
        for arg in ["-Xlinker", "-T", "-Xlinker", &script.display().to_string()] {
            println!("cargo:rustc-link-arg-bin=pod-identity-webhook={arg}");
        }
        // RUSTFLAGS from the environment replace .cargo/config.toml's, and with them the v0
        // names the script's patterns are written in: the build still works, but the
        // functions are no longer gathered.
        let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
        if !flags.contains("symbol-mangling-version=v0") {
            println!(
                "cargo:warning=RUSTFLAGS lacks -C symbol-mangling-version=v0, so link/hot-text.ld \
                 matches nothing and about 4 MiB more of the binary stays resident; add the flag \
                 (see .cargo/config.toml) or set PIW_HOT_TEXT=0"
            );
        }
    }
}
