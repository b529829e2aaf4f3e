//! Finds or builds libflare and tells cargo how to link it.
//!
//! Where the library comes from, first match wins:
//!   1. `FLARE_DIR`: an install prefix (`lib/` or `lib64/` holds the libraries, `include/` the
//!      headers) or a CMake build tree of this repository (the libraries at its top level).
//!   2. `pkg-config flare` (the `pkg-config` program, or `$PKG_CONFIG`): its `-L` directories.
//!      Skipped when `FLARE_NO_PKG_CONFIG` is set.
//!   3. This repository's CMake project, configured and built into `OUT_DIR` with the kernel set
//!      of `FLARE_ARCHS` / `FLARE_HEAD_DIMS` / `FLARE_DTYPES` (CMake lists, `;` or `,`
//!      separated; unset: the project's defaults, every kernel). A CPU-only test run needs
//!      one kernel: `FLARE_ARCHS=80 FLARE_HEAD_DIMS=64 FLARE_DTYPES=fp16`.
//!
//! How it is linked: `FLARE_LINK=static` (default) links `libflare_static.a` (kernels and host
//! code in one archive) and the static CUDA runtime (`cudart_static`, plus `dl`, `rt`,
//! `pthread`, `stdc++`), so the binaries need no libflare.so at run time: the test binaries
//! can be carried to a GPU machine as they are. `FLARE_LINK=dylib` links `libflare.so` (which
//! carries its own static CUDA runtime) and `libcudart.so` for the caller's own CUDA calls; the
//! library directory must then be on the loader's path at run time (`LD_LIBRARY_PATH`).
//! The CUDA library directory comes from the build tree's nvcc, else `CUDA_PATH`, `CUDA_HOME`,
//! `CUDA_ROOT`, the `nvcc` on `PATH`, `/usr/local/cuda`.
//!
//! With the `candle` feature, `flare_candle` (`flare_candle_static` when static) is linked too.
//!
//! Exported to the crate: `FLARE_SYS_INCLUDE_DIR` (the directory holding `flare/flare.h` the
//! library was built from) and `FLARE_SYS_CANDLE_HEADER` (the path of `flare_candle.h`).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const ENV_VARS: &[&str] = &[
    "FLARE_DIR",
    "FLARE_LINK",
    "FLARE_NO_PKG_CONFIG",
    "FLARE_ARCHS",
    "FLARE_HEAD_DIMS",
    "FLARE_DTYPES",
    "PKG_CONFIG",
    "CUDA_PATH",
    "CUDA_HOME",
    "CUDA_ROOT",
    "CMAKE",
];

#[derive(Clone, Copy, PartialEq)]
enum LinkKind {
    Static,
    Dylib,
}

struct Found {
    lib_dir: PathBuf,
    include_dir: PathBuf,
    /// The CUDA compiler the library was built with, when known (build trees).
    nvcc: Option<PathBuf>,
}

fn main() {
    for var in ENV_VARS {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo_root = manifest_dir.join("../..");
    let candle = env::var_os("CARGO_FEATURE_CANDLE").is_some();
    let kind = match env::var("FLARE_LINK").as_deref() {
        Ok("static") | Err(_) => LinkKind::Static,
        Ok("dylib") | Ok("shared") => LinkKind::Dylib,
        Ok(other) => panic!("FLARE_LINK={other}: use `static` or `dylib`"),
    };

    let found = if let Some(dir) = env::var_os("FLARE_DIR") {
        from_flare_dir(Path::new(&dir), &repo_root)
    } else if let Some(found) = from_pkg_config(kind) {
        found
    } else {
        build_from_source(&repo_root, candle, kind)
    };

    let lib_dir = &found.lib_dir;
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-env=FLARE_SYS_INCLUDE_DIR={}", found.include_dir.display());
    println!("cargo:include={}", found.include_dir.display());
    println!("cargo:libdir={}", lib_dir.display());
    let candle_header = candle_header(&found.include_dir, &repo_root);
    println!("cargo:rustc-env=FLARE_SYS_CANDLE_HEADER={}", candle_header.display());

    match kind {
        LinkKind::Static => {
            if candle {
                require(lib_dir, "libflare_candle_static.a");
                println!("cargo:rustc-link-lib=static=flare_candle_static");
            }
            require(lib_dir, "libflare_static.a");
            println!("cargo:rustc-link-lib=static=flare_static");
            let cuda_lib = cuda_lib_dir(found.nvcc.as_deref());
            println!("cargo:rustc-link-search=native={}", cuda_lib.display());
            println!("cargo:rustc-link-lib=static=cudart_static");
            for lib in ["dl", "rt", "pthread", "stdc++"] {
                println!("cargo:rustc-link-lib=dylib={lib}");
            }
            println!("cargo:rerun-if-changed={}", lib_dir.join("libflare_static.a").display());
        }
        LinkKind::Dylib => {
            if candle {
                require(lib_dir, "libflare_candle.so");
                println!("cargo:rustc-link-lib=dylib=flare_candle");
            }
            require(lib_dir, "libflare.so");
            println!("cargo:rustc-link-lib=dylib=flare");
            let cuda_lib = cuda_lib_dir(found.nvcc.as_deref());
            println!("cargo:rustc-link-search=native={}", cuda_lib.display());
            println!("cargo:rustc-link-lib=dylib=cudart");
            println!("cargo:rerun-if-changed={}", lib_dir.join("libflare.so").display());
        }
    }
}

fn require(dir: &Path, file: &str) {
    if !dir.join(file).exists() {
        panic!(
            "flare-sys: {} not found in {} (see rust/README.md: FLARE_DIR, FLARE_LINK, the \
             `candle` feature)",
            file,
            dir.display()
        );
    }
}

fn has_flare_lib(dir: &Path) -> bool {
    dir.join("libflare_static.a").exists() || dir.join("libflare.so").exists()
}

/// FLARE_DIR: an install prefix or a build tree.
fn from_flare_dir(dir: &Path, repo_root: &Path) -> Found {
    for sub in ["lib", "lib64"] {
        let lib_dir = dir.join(sub);
        if has_flare_lib(&lib_dir) {
            return Found { lib_dir, include_dir: dir.join("include"), nvcc: None };
        }
    }
    if has_flare_lib(dir) {
        // A build tree: the headers are in the source tree it was configured from.
        let cache = std::fs::read_to_string(dir.join("CMakeCache.txt")).unwrap_or_default();
        let source = cache_value(&cache, "CMAKE_HOME_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root.to_path_buf());
        let nvcc = cache_value(&cache, "CMAKE_CUDA_COMPILER").map(PathBuf::from);
        return Found { lib_dir: dir.to_path_buf(), include_dir: source.join("include"), nvcc };
    }
    panic!(
        "FLARE_DIR={}: no libflare_static.a / libflare.so in lib/, lib64/ or the directory \
         itself (an install prefix or a CMake build tree of flare)",
        dir.display()
    );
}

fn cache_value(cache: &str, key: &str) -> Option<String> {
    cache.lines().find_map(|line| {
        let (lhs, value) = line.split_once('=')?;
        let (name, _type) = lhs.split_once(':')?;
        (name == key).then(|| value.to_string())
    })
}

/// `pkg-config --libs --cflags flare`, run as a program; None when it is absent or fails.
fn from_pkg_config(kind: LinkKind) -> Option<Found> {
    if env::var_os("FLARE_NO_PKG_CONFIG").is_some() {
        return None;
    }
    let program = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let output = Command::new(program).args(["--libs", "--cflags", "flare"]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lib_dirs = Vec::new();
    let mut include_dir = None;
    for flag in text.split_whitespace() {
        if let Some(d) = flag.strip_prefix("-L") {
            lib_dirs.push(PathBuf::from(d));
        } else if let Some(d) = flag.strip_prefix("-I") {
            include_dir.get_or_insert_with(|| PathBuf::from(d));
        }
    }
    let wanted = if kind == LinkKind::Static { "libflare_static.a" } else { "libflare.so" };
    let lib_dir = lib_dirs.into_iter().find(|d| d.join(wanted).exists())?;
    let include_dir = include_dir.unwrap_or_else(|| lib_dir.join("../include"));
    Some(Found { lib_dir, include_dir, nvcc: None })
}

/// Configures and builds this repository's CMake project into OUT_DIR.
fn build_from_source(repo_root: &Path, candle: bool, kind: LinkKind) -> Found {
    if !repo_root.join("CMakeLists.txt").exists() {
        panic!(
            "flare-sys: no FLARE_DIR, no `pkg-config flare`, and no flare source tree at {} to \
             build from",
            repo_root.display()
        );
    }
    for path in ["CMakeLists.txt", "cmake", "src", "include"] {
        println!("cargo:rerun-if-changed={}", repo_root.join(path).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let build_dir = out_dir.join("flare-build");
    let cmake = env::var("CMAKE").unwrap_or_else(|_| "cmake".to_string());
    let mut configure = Command::new(&cmake);
    configure
        .arg("-S")
        .arg(repo_root)
        .arg("-B")
        .arg(&build_dir)
        .arg("-DCMAKE_BUILD_TYPE=Release")
        .arg("-DFLARE_BUILD_TESTS=OFF")
        .arg("-DFLARE_BUILD_BENCH=OFF")
        .arg("-DFLARE_BUILD_EXAMPLES=OFF")
        .arg("-DFLARE_BUILD_PYTHON=OFF")
        .arg("-DFLARE_BUILD_CP=OFF");
    if Command::new("ninja").arg("--version").output().is_ok() {
        configure.arg("-G").arg("Ninja");
    }
    for (var, cache) in [
        ("FLARE_ARCHS", "FLARE_ARCHS"),
        ("FLARE_HEAD_DIMS", "FLARE_HEAD_DIMS"),
        ("FLARE_DTYPES", "FLARE_DTYPES"),
    ] {
        if let Ok(value) = env::var(var) {
            configure.arg(format!("-D{cache}={}", value.replace(',', ";")));
        }
    }
    run(&mut configure, "configure flare with CMake");
    let jobs = env::var("NUM_JOBS").unwrap_or_else(|_| "2".to_string());
    let mut build = Command::new(&cmake);
    build.arg("--build").arg(&build_dir).arg("-j").arg(jobs).arg("--target");
    match (kind, candle) {
        (LinkKind::Static, false) => build.arg("flare_static"),
        (LinkKind::Static, true) => build.arg("flare_static").arg("flare_candle_static"),
        (LinkKind::Dylib, false) => build.arg("flare"),
        (LinkKind::Dylib, true) => build.arg("flare").arg("flare_candle"),
    };
    run(&mut build, "build flare with CMake");
    let cache = std::fs::read_to_string(build_dir.join("CMakeCache.txt")).unwrap_or_default();
    let nvcc = cache_value(&cache, "CMAKE_CUDA_COMPILER").map(PathBuf::from);
    Found { lib_dir: build_dir, include_dir: repo_root.join("include"), nvcc }
}

fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("flare-sys: could not {what}: {command:?}: {e}"));
    if !status.success() {
        panic!("flare-sys: could not {what}: {command:?} exited with {status}");
    }
}

/// flare_candle.h: installed next to flare.h, or in the source tree.
fn candle_header(include_dir: &Path, repo_root: &Path) -> PathBuf {
    let installed = include_dir.join("flare/flare_candle.h");
    if installed.exists() {
        installed
    } else {
        repo_root.join("src/candle/flare_candle.h")
    }
}

fn cuda_lib_dir(nvcc: Option<&Path>) -> PathBuf {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(nvcc) = nvcc {
        if let Some(root) = nvcc.parent().and_then(Path::parent) {
            roots.push(root.to_path_buf());
        }
    }
    for var in ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"] {
        if let Some(v) = env::var_os(var) {
            roots.push(PathBuf::from(v));
        }
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v nvcc"]).output() {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if let Some(root) = Path::new(&path).parent().and_then(Path::parent) {
            if !path.is_empty() {
                roots.push(root.to_path_buf());
            }
        }
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    for root in &roots {
        for sub in ["lib64", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib", "lib"] {
            let dir = root.join(sub);
            if dir.join("libcudart_static.a").exists() || dir.join("libcudart.so").exists() {
                return dir;
            }
        }
    }
    panic!("flare-sys: no CUDA runtime library (libcudart_static.a) under {roots:?}");
}
