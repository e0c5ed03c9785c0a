//! Output plumbing shared by the tools: atomic files and "`-` means stdout".

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file written under a temporary name beside its destination and renamed into place by
/// `commit`. Dropped without `commit` (an error, a panic), it leaves nothing behind.
pub struct AtomicFile {
    temp: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
}

impl AtomicFile {
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            // tempfile's default 0600 would make every output private; use a normal file mode.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(&dir)
            .with_context(|| {
                format!("{}: cannot create a temporary file in {}", dest.display(), dir.display())
            })?;
        Ok(Self { temp: Some(temp), dest })
    }

    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// The temporary file's own path, for libraries that write by path (HDF5). What they
    /// write there is what `commit` renames into place.
    pub fn temp_path(&self) -> &Path {
        self.temp.as_ref().expect("AtomicFile already committed").path()
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let temp = self.temp.take().expect("AtomicFile committed twice");
        temp.as_file().sync_all().with_context(|| format!("{}: cannot sync", self.dest.display()))?;
        temp.persist(&self.dest)
            .map_err(|e| e.error)
            .with_context(|| format!("{}: cannot rename into place", self.dest.display()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.temp.as_mut().expect("write after commit").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.temp.as_mut().expect("flush after commit").flush()
    }
}

/// Where a tool's data goes: stdout, or a file that appears only when the run succeeds.
pub enum Output {
    Stdout(BufWriter<std::io::Stdout>),
    File(BufWriter<AtomicFile>),
    Device(BufWriter<File>),
}

impl Output {
    /// `None` or `-` is stdout.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Output::Stdout(BufWriter::with_capacity(1 << 20, std::io::stdout()))),
            Some(p) if p.as_os_str() == "-" => {
                Ok(Output::Stdout(BufWriter::with_capacity(1 << 20, std::io::stdout())))
            }
            // A device or pipe (`-o /dev/null`, a FIFO) is written in place: renaming a
            // temporary over it would replace the device with a plain file.
            Some(p) if std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir()) => {
                let f = File::options()
                    .write(true)
                    .open(p)
                    .with_context(|| format!("{}: cannot open for writing", p.display()))?;
                Ok(Output::Device(BufWriter::with_capacity(1 << 20, f)))
            }
            Some(p) => Ok(Output::File(BufWriter::with_capacity(1 << 20, AtomicFile::create(p)?))),
        }
    }

    /// Makes the output final: flushes stdout, or renames the file into place.
    pub fn finish(self) -> Result<()> {
        match self {
            Output::Stdout(mut w) => Ok(w.flush()?),
            Output::Device(mut w) => Ok(w.flush()?),
            Output::File(w) => {
                let file = w.into_inner().map_err(|e| e.into_error())?;
                file.commit()
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File(w) => w.write(buf),
            Output::Device(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File(w) => w.flush(),
            Output::Device(w) => w.flush(),
        }
    }
}

/// Opens an input path for reading with a clear error naming it; `-` is stdin.
pub fn open_input(path: &Path) -> Result<Box<dyn std::io::BufRead + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin())));
    }
    let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
}

/// The inputs a batch tool could not process, written with `--failures FILE` as tab-separated
/// lines `path<TAB>reason` in input order (one line each; a reason that begins with its own path
/// has it removed), atomically, so a job scheduler can retry exactly those.
#[derive(Debug, Default)]
pub struct FailureList {
    entries: Vec<(String, String)>,
}

impl FailureList {
    pub fn push(&mut self, path: &str, reason: &str) {
        let reason = reason.strip_prefix(path).and_then(|r| r.strip_prefix(": ")).unwrap_or(reason);
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        self.entries.push((clean(path), clean(reason)));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the list to `path` (an empty file when nothing failed).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut f = AtomicFile::create(path)?;
        for (p, r) in &self.entries {
            writeln!(f, "{p}\t{r}").with_context(|| format!("{}: cannot write", path.display()))?;
        }
        f.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
            // dropped without commit
        }
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temporary left behind");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"whole");
    }

    /// Regression: `-o /dev/null` once renamed a temporary over the device, as root.
    #[test]
    fn devices_are_written_in_place() {
        let mut out = Output::open(Some(Path::new("/dev/null"))).unwrap();
        assert!(matches!(out, Output::Device(_)));
        out.write_all(b"gone").unwrap();
        out.finish().unwrap();
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&meta.file_type()));
    }
}
