//! Compiles the in-process decoder shim (csrc/vk_decode.c) against the system FFmpeg libraries,
//! found through the `pkg-config` binary (Debian: libavformat-dev libavcodec-dev libswscale-dev
//! libavutil-dev; `make deps` installs them).

use std::process::Command;

const LIBS: [&str; 4] = ["libavformat", "libavcodec", "libswscale", "libavutil"];

fn pkg_config(args: &[&str]) -> String {
    let out = Command::new("pkg-config").args(args).args(LIBS).output().unwrap_or_else(|e| {
        panic!(
            "cannot run pkg-config ({e}); install pkg-config and FFmpeg's development packages (`make deps`)"
        )
    });
    if !out.status.success() {
        panic!(
            "pkg-config cannot find {}: {}\ninstall libavformat-dev libavcodec-dev libswscale-dev libavutil-dev (`make deps`)",
            LIBS.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/vk_decode.c");
    println!("cargo:rerun-if-changed=csrc/vk_decode.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let mut build = cc::Build::new();
    build.file("csrc/vk_decode.c").flag_if_supported("-std=gnu11").warnings(true);
    for flag in pkg_config(&["--cflags"]).split_whitespace() {
        match flag.strip_prefix("-I") {
            Some(dir) => {
                build.include(dir);
            }
            None => {
                build.flag(flag);
            }
        }
    }
    build.compile("vk_decode");
    for flag in pkg_config(&["--libs"]).split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        }
    }
    println!("cargo:rustc-link-lib=m");
}
