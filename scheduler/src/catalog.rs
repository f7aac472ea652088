//! The durable catalog on disk: `<data-dir>/catalog`, read once at start
//! and rewritten whole (a temporary file, fsync, rename, fsync of the
//! directory) whenever the state machine asks (`Command::SaveCatalog`), so
//! a crash at any moment leaves the old catalog or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use stratus_protocol::catalog::{Catalog, MAX_CATALOG_BYTES};

/// The catalog file of one data directory.
#[derive(Debug, Clone)]
pub struct CatalogFile {
    path: PathBuf,
}

impl CatalogFile {
    pub fn in_dir(data_dir: &Path) -> CatalogFile {
        CatalogFile {
            path: data_dir.join("catalog"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The catalog, or an empty one (no start yet) when there is no file.
    /// A file that does not read is an error naming it: it is never
    /// overwritten silently.
    pub fn load(&self) -> anyhow::Result<Catalog> {
        let shown = self.path.display().to_string();
        let bytes = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalog::default()),
            Err(e) => anyhow::bail!("cannot read the catalog {shown}: {e}"),
            Ok(meta) if meta.len() > MAX_CATALOG_BYTES => anyhow::bail!(
                "the catalog {shown} is {} bytes, over the limit of {MAX_CATALOG_BYTES}",
                meta.len()
            ),
            Ok(_) => std::fs::read(&self.path)
                .map_err(|e| anyhow::anyhow!("cannot read the catalog {shown}: {e}"))?,
        };
        Catalog::decode(&bytes, &shown).map_err(|e| {
            anyhow::anyhow!(
                "{e}; move it away to start without the frames it records \
                 (their partitions are then dropped by the workers that kept them)"
            )
        })
    }

    /// Write `catalog` atomically.
    pub fn save(&self, catalog: &Catalog) -> anyhow::Result<()> {
        let bytes = catalog.encode()?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".catalog.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!("cannot write the catalog {}: {e}", self.path.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of this test process.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("stratus-catalog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_saved_catalog_loads_back_and_a_missing_one_is_empty() {
        let dir = temp_dir("saved");
        let file = CatalogFile::in_dir(&dir.join("data"));
        assert_eq!(file.load().unwrap(), Catalog::default());
        let catalog = Catalog {
            starts: 4,
            ..Catalog::default()
        };
        file.save(&catalog).unwrap();
        assert_eq!(file.load().unwrap(), catalog);
        // Only the catalog is left: no temporary file.
        let names: Vec<_> = std::fs::read_dir(dir.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("catalog")]);
    }

    #[test]
    fn a_damaged_catalog_stops_the_start_naming_the_file() {
        let dir = temp_dir("damaged");
        let file = CatalogFile::in_dir(&dir);
        std::fs::write(file.path(), b"STRATUS-CATALOG1 garbage").unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains(&file.path().display().to_string()), "{e}");
        assert!(e.contains("move it away"), "{e}");
    }
}
