// Where build.rs looks for oneMKL's static archives, and the one-line message it stops with when
// they are missing. A plain file `include!`d by build.rs and by tests/build_message.rs, so the
// message a user sees is tested without MKL installed (hence `//` comments: an included file
// cannot carry inner doc comments).

/// MKL's three static archives (LP64 interface, sequential layer, core), in link order.
const ARCHIVES: [&str; 3] = ["libmkl_intel_lp64.a", "libmkl_sequential.a", "libmkl_core.a"];

/// The directory holding the archives: `$THRIVE_MKL_LIB`, else `$MKLROOT/lib`, else
/// `~/.cache/thrive/mkl/lib` (where `scripts/setup-mkl.sh` lays them out). `var` reads an
/// environment variable (a parameter so that tests need not change the process's environment).
fn mkl_lib_dir(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> std::path::PathBuf {
    use std::path::PathBuf;
    var("THRIVE_MKL_LIB")
        .map(PathBuf::from)
        .or_else(|| var("MKLROOT").map(|r| PathBuf::from(r).join("lib")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/thrive/mkl/lib")))
        .unwrap_or_default()
}

/// The archives of [`ARCHIVES`] that are not files in `dir`.
fn missing_archives(dir: &std::path::Path) -> Vec<&'static str> {
    ARCHIVES.iter().copied().filter(|a| !dir.join(a).is_file()).collect()
}

/// What the build says, in one line, when `missing` archives are not in `dir`: which, where, and
/// what to run.
fn missing_message(dir: &std::path::Path, missing: &[&str]) -> String {
    format!(
        "thrive-mkl: {missing:?} not found in {}. Run `bash scripts/setup-mkl.sh` (it lays out PyPI's \
         mkl-static in ~/.cache/thrive/mkl), or set THRIVE_MKL_LIB to a directory holding them.",
        dir.display()
    )
}
