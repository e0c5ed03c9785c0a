//! List files in the PaddleVideo / MMAction2 format: one `path label` per line, where the label is
//! an integer or, for multi-label sets, integers joined by commas (`path 3,17`). Blank lines and
//! lines starting with `#` are skipped. Paths may contain spaces: the label is the last field.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The path as written in the list (relative paths are not resolved here).
    pub path: String,
    /// One label, several (multi-label), or none (a list of paths only).
    pub labels: Vec<i64>,
    /// 1-based line number, for error messages.
    pub line: usize,
}

impl ListEntry {
    /// The path joined to `root` when relative (`--root DIR`).
    pub fn resolve(&self, root: Option<&Path>) -> PathBuf {
        match root {
            Some(r) if Path::new(&self.path).is_relative() => r.join(&self.path),
            _ => PathBuf::from(&self.path),
        }
    }
}

fn parse_labels(field: &str) -> Option<Vec<i64>> {
    field.split(',').map(|p| p.trim().parse::<i64>().ok().filter(|v| *v >= 0)).collect()
}

/// Parses one line. A line with one field is a path without a label.
pub fn parse_line(text: &str, line: usize) -> Result<Option<ListEntry>> {
    let t = text.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    match t.rsplit_once(char::is_whitespace) {
        None => Ok(Some(ListEntry { path: t.to_string(), labels: vec![], line })),
        Some((path, last)) => match parse_labels(last) {
            Some(labels) => Ok(Some(ListEntry { path: path.trim_end().to_string(), labels, line })),
            None => {
                bail!("line {line}: label {last:?} is not a non-negative integer (expected `path label`)")
            }
        },
    }
}

/// Reads a whole list file; every unreadable line is an error naming the file and line.
pub fn read_list(path: &Path) -> Result<Vec<ListEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read list file", path.display()))?;
    parse_list_text(&text, path)
}

/// Parses a whole list file's text; `path` names it in errors.
pub fn parse_list_text(text: &str, path: &Path) -> Result<Vec<ListEntry>> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(e) = parse_line(l, i + 1).with_context(|| format!("{}", path.display()))? {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_multi_and_unlabelled_lines() {
        assert_eq!(parse_line("a/b.mp4 3", 1).unwrap().unwrap().labels, vec![3]);
        let e = parse_line("dir with space/v.mp4 1,4,9", 2).unwrap().unwrap();
        assert_eq!((e.path.as_str(), e.labels), ("dir with space/v.mp4", vec![1, 4, 9]));
        assert_eq!(parse_line("only.mp4", 3).unwrap().unwrap().labels, Vec::<i64>::new());
        assert!(parse_line("  # comment", 4).unwrap().is_none());
        assert!(parse_line("", 5).unwrap().is_none());
        let err = parse_line("v.mp4 cat", 6).unwrap_err().to_string();
        assert!(err.contains("line 6") && err.contains("\"cat\""), "{err}");
        assert!(parse_line("v.mp4 -1", 7).is_err());
    }

    #[test]
    fn resolve_joins_relative_paths_only() {
        let e = ListEntry { path: "x.mp4".into(), labels: vec![], line: 1 };
        assert_eq!(e.resolve(Some(Path::new("/d"))), PathBuf::from("/d/x.mp4"));
        let a = ListEntry { path: "/abs/x.mp4".into(), labels: vec![], line: 1 };
        assert_eq!(a.resolve(Some(Path::new("/d"))), PathBuf::from("/abs/x.mp4"));
    }
}
