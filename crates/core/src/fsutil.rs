//! Atomic file writes: a reader sees either the old file or the whole new one.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary path used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `path` through `write` into a temporary sibling, fsyncs it and
/// renames it into place. On error the temporary file is removed and `path`
/// is untouched.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        out.flush().map_err(|e| Error::io(&tmp, e))?;
        let file = out.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_parent(path);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename durable; best effort, since not every platform can open a directory.
pub fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

/// `path` as seen from the directory `base`, worked out on the absolute paths without touching
/// the disk (`..` where `path` lies outside `base`), with `/` separators: what a run or pool
/// records, so that it reads the same wherever it was started and still points right once moved
/// together with what it names.
pub fn relative_to(path: &Path, base: &Path) -> String {
    use std::path::Component;
    fn absolute(p: &Path) -> Vec<String> {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut parts: Vec<String> = Vec::new();
        for c in abs.components() {
            match c {
                Component::ParentDir => {
                    parts.pop();
                }
                Component::CurDir => {}
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::RootDir | Component::Prefix(_) => parts.push(c.as_os_str().to_string_lossy().into_owned()),
            }
        }
        parts
    }
    let (path, base) = (absolute(path), absolute(base));
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut out: Vec<&str> = vec![".."; base.len() - common];
    out.extend(path[common..].iter().map(String::as_str));
    if out.is_empty() {
        ".".into()
    } else {
        out.join("/")
    }
}

/// A model as a run or pool records it: a local directory or file relative to `base` (see
/// [`relative_to`]), anything else (a Hub id) as written.
pub fn recorded_model(spec: &str, base: &Path) -> String {
    let local = Path::new(spec);
    if local.exists() {
        relative_to(local, base)
    } else {
        spec.into()
    }
}

/// Where a recorded model is: a path relative to `base` when one is there, else the recorded
/// text itself (a Hub id, or a path recorded before paths were recorded relative).
pub fn resolve_recorded(recorded: &str, base: &Path) -> String {
    let local = base.join(recorded);
    if Path::new(recorded).is_relative() && local.exists() {
        local.display().to_string()
    } else {
        recorded.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative_to(Path::new("/a/b/model"), Path::new("/a/b")), "model");
        assert_eq!(relative_to(Path::new("/a/b/model"), Path::new("/a/c/pool")), "../../b/model");
        assert_eq!(relative_to(Path::new("/a/b/../m"), Path::new("/a/./b")), "../m");
        assert_eq!(relative_to(Path::new("/a"), Path::new("/a")), ".");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(relative_to(Path::new("x/y"), &cwd), "x/y");
        assert_eq!(recorded_model("google/gemma-2-2b", Path::new("/tmp")), "google/gemma-2-2b");
    }
}
