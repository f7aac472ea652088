//! Data roots: the directories a worker may read and write for requests
//! (`--data-root DIR`, repeatable; `data_roots` in its settings;
//! `STRATUS_DATA_ROOTS=DIR1:DIR2`). Every local path a task touches is
//! checked here BEFORE any file or directory is opened, listed or created:
//! on its canonical form (symbolic links and `..` resolved; for a path that
//! does not exist yet, its nearest existing ancestor is resolved and the rest
//! appended), which must lie under a root's canonical form. A worker with no
//! roots touches no files at all, and says how to give it some.
//!
//! [`within`] is the pure part (a path against roots, both canonical);
//! [`resolve`] asks the file system for a path's canonical form.

use std::io;
use std::path::{Component, Path, PathBuf};

/// What to set to give a worker data roots (in errors).
pub const HOW: &str =
    "start the worker with --data-root DIR (repeatable) or STRATUS_DATA_ROOTS=DIR1:DIR2";

/// The canonical directories a worker may use.
#[derive(Debug, Clone, Default)]
pub struct DataRoots {
    roots: Vec<PathBuf>,
}

impl DataRoots {
    /// Canonicalize each root (it must exist and be a directory); an error
    /// names the root at fault.
    pub fn new(roots: &[PathBuf]) -> Result<DataRoots, String> {
        let mut canonical = Vec::with_capacity(roots.len());
        for root in roots {
            if root.as_os_str().is_empty() {
                continue;
            }
            let c = std::fs::canonicalize(root)
                .map_err(|e| format!("data root {}: {e}", root.display()))?;
            if !c.is_dir() {
                return Err(format!("data root {} is not a directory", root.display()));
            }
            if !canonical.contains(&c) {
                canonical.push(c);
            }
        }
        Ok(DataRoots { roots: canonical })
    }

    /// No roots: every file request is refused.
    pub fn none() -> DataRoots {
        DataRoots::default()
    }

    /// The canonical roots.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The roots as a list for messages.
    pub fn describe(&self) -> String {
        if self.roots.is_empty() {
            return "none".into();
        }
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Allow `path` (a file or directory, existing or to be created) or say
    /// why not: the error names the path and the roots.
    pub fn check(&self, path: &Path) -> Result<PathBuf, String> {
        if self.roots.is_empty() {
            return Err(format!(
                "{} refused: this worker has no data roots, so it reads and writes no files; {HOW}",
                path.display()
            ));
        }
        let resolved = resolve(path).map_err(|e| {
            format!(
                "{} refused: cannot resolve it to check it against the data roots ({}): {e}",
                path.display(),
                self.describe()
            )
        })?;
        if within(&resolved, &self.roots) {
            return Ok(resolved);
        }
        let shown = if resolved.as_path() == path {
            String::new()
        } else {
            format!(" (resolves to {})", resolved.display())
        };
        Err(format!(
            "{}{shown} is outside this worker's data roots ({}); {HOW} to allow it",
            path.display(),
            self.describe()
        ))
    }

    /// [`DataRoots::check`] as the engine's listing guard.
    pub fn guard(&self, path: &Path) -> stratus_engine::error::Result<()> {
        self.check(path)
            .map(|_| ())
            .map_err(stratus_engine::error::EngineError::Argument)
    }
}

/// Whether `path` is one of `roots` or lies below one. Both must be
/// canonical (absolute, no `.`/`..`, links resolved): this compares
/// components, so `/data2` is not below `/data`.
pub fn within(path: &Path, roots: &[PathBuf]) -> bool {
    path.is_absolute()
        && !path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        && roots.iter().any(|root| path.starts_with(root))
}

/// `path`'s canonical form: the nearest ancestor that exists (a symbolic
/// link counts as existing) canonicalized, and the components that do not
/// exist yet appended, with `..` among them applied lexically (as creating
/// the directories would). A relative path is taken from the current
/// directory. A dangling symbolic link is an error: where it leads cannot be
/// checked before something is created through it.
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut existing = absolute.as_path();
    let mut missing: Vec<Component> = Vec::new();
    loop {
        match std::fs::symlink_metadata(existing) {
            Ok(meta) => {
                let canonical = std::fs::canonicalize(existing).map_err(|e| {
                    if meta.file_type().is_symlink() {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "{} is a symbolic link to a path that does not exist",
                                existing.display()
                            ),
                        )
                    } else {
                        e
                    }
                })?;
                return Ok(append_lexically(canonical, missing.iter().rev()));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(last)) =
                    (existing.parent(), existing.components().next_back())
                else {
                    return Err(e);
                };
                missing.push(last);
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `base` with `rest` appended: `.` skipped, `..` removing the last
/// component (never above the root).
fn append_lexically<'a>(
    mut base: PathBuf,
    rest: impl Iterator<Item = &'a Component<'a>>,
) -> PathBuf {
    for c in rest {
        match c {
            Component::ParentDir => {
                base.pop();
            }
            Component::CurDir => {}
            other => base.push(other.as_os_str()),
        }
    }
    base
}

/// Roots from the places they may be given, the first non-empty one
/// winning: flags, then `STRATUS_DATA_ROOTS` (split like `PATH`), then the
/// settings file.
pub fn configured(flags: &[PathBuf], env: Option<&str>, settings: &[PathBuf]) -> Vec<PathBuf> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    if let Some(list) = env.filter(|l| !l.trim().is_empty()) {
        return std::env::split_paths(list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    settings.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn roots(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn within_compares_whole_components() {
        let r = roots(&["/data", "/tmp"]);
        assert!(within(Path::new("/data"), &r));
        assert!(within(Path::new("/data/x/y.parquet"), &r));
        assert!(within(Path::new("/tmp/a"), &r));
        assert!(!within(Path::new("/data2/x"), &r));
        assert!(!within(Path::new("/etc/passwd"), &r));
        assert!(!within(Path::new("/"), &r));
        // Not canonical: refused rather than guessed.
        assert!(!within(Path::new("/data/../etc/passwd"), &r));
        assert!(!within(Path::new("data/x"), &r));
        assert!(!within(Path::new("/data/x"), &[]));
    }

    #[test]
    fn the_first_configured_list_wins() {
        let flags = roots(&["/a"]);
        let file = roots(&["/c"]);
        assert_eq!(configured(&flags, Some("/b"), &file), flags);
        assert_eq!(
            configured(&[], Some("/b:/b2::"), &file),
            roots(&["/b", "/b2"])
        );
        assert_eq!(configured(&[], Some(" "), &file), file);
        assert_eq!(configured(&[], None, &[]), Vec::<PathBuf>::new());
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn temp(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("stratus-roots-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(fs::canonicalize(&dir).unwrap())
    }

    #[test]
    fn links_and_dots_are_resolved_before_the_check() {
        let t = temp("check");
        let root = t.0.join("root");
        let outside = t.0.join("outside");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(t.0.join("nowhere"), root.join("dangling")).unwrap();
        let roots = DataRoots::new(std::slice::from_ref(&root)).unwrap();

        assert_eq!(roots.check(&root.join("sub")).unwrap(), root.join("sub"));
        // Not there yet: the nearest existing ancestor decides.
        assert_eq!(
            roots.check(&root.join("new/dir/x.parquet")).unwrap(),
            root.join("new/dir/x.parquet")
        );
        for bad in [
            root.join("link/secret"),
            root.join("link"),
            root.join("sub/../../outside/secret"),
            root.join("new/../../outside/x"),
            root.join("link/new-file"),
            outside.join("secret"),
        ] {
            let e = roots.check(&bad).unwrap_err();
            assert!(
                e.contains(&bad.display().to_string()) && e.contains(&root.display().to_string()),
                "{}: {e}",
                bad.display()
            );
            assert!(e.contains("outside this worker's data roots"), "{e}");
        }
        let e = roots.check(&root.join("dangling/x")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");

        let none = DataRoots::none();
        let e = none.check(&root).unwrap_err();
        assert!(
            e.contains("no data roots") && e.contains("--data-root"),
            "{e}"
        );
        let e = DataRoots::new(&[t.0.join("missing")]).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
