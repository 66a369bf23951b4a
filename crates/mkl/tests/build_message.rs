//! The message a `mkl` build stops with when oneMKL's archives are missing: one line that names
//! the missing archives and the directory searched, and says what to run. The functions are
//! build.rs's own (build_support.rs), so this runs without MKL and without the `link` feature.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

include!("../build_support.rs");

/// A fresh empty directory under the system's temporary directory.
fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thrive-mkl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_empty_directory_names_every_archive_and_the_setup_script() {
    let dir = empty_dir("empty");
    let missing = missing_archives(&dir);
    assert_eq!(missing, ARCHIVES.to_vec());
    let message = missing_message(&dir, &missing);
    for archive in ARCHIVES {
        assert!(message.contains(archive), "{message}");
    }
    assert!(message.contains("bash scripts/setup-mkl.sh"), "{message}");
    assert!(message.contains("THRIVE_MKL_LIB"), "{message}");
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn only_the_archives_not_there_are_named() {
    let dir = empty_dir("partial");
    std::fs::write(dir.join("libmkl_core.a"), b"").unwrap();
    let missing = missing_archives(&dir);
    assert_eq!(missing, vec!["libmkl_intel_lp64.a", "libmkl_sequential.a"]);
    let message = missing_message(&dir, &missing);
    assert!(!message.contains("libmkl_core.a"), "{message}");
    for archive in ["libmkl_intel_lp64.a", "libmkl_sequential.a"] {
        std::fs::write(dir.join(archive), b"").unwrap();
    }
    assert!(missing_archives(&dir).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_library_directory_follows_thrive_mkl_lib_then_mklroot_then_home() {
    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }
    let all = [("THRIVE_MKL_LIB", "/a"), ("MKLROOT", "/b"), ("HOME", "/c")];
    assert_eq!(mkl_lib_dir(env(&all)), Path::new("/a"));
    assert_eq!(mkl_lib_dir(env(&all[1..])), Path::new("/b/lib"));
    assert_eq!(mkl_lib_dir(env(&all[2..])), Path::new("/c/.cache/thrive/mkl/lib"));
    assert_eq!(mkl_lib_dir(env(&[])), PathBuf::new());
}
