//! Class-name maps in the forms users have them:
//! - one name per line (MMAction2's `tools/data/*/label_map_*.txt`, vidkit's `labels.txt`);
//! - `index name` lines (PaddleVideo's `data/k400/Kinetics-400_label_list.txt`), any order;
//! - Kinetics' annotation CSV (`label,youtube_id,time_start,time_end,split`): the distinct
//!   values of its `label` column, sorted, as MMAction2's `tools/data/build_file_list.py`
//!   numbers Kinetics classes.
//! Names keep their inner spaces.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Reads a label map file (any of the forms above) into names by class index.
pub fn read_label_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read label names", path.display()))?;
    parse_label_names(&text).with_context(|| path.display().to_string())
}

/// `read_label_names` on the file's text.
pub fn parse_label_names(text: &str) -> Result<Vec<String>> {
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    let Some(&(_, first)) = lines.first() else { bail!("no class names") };
    let header = split_csv(first);
    if header.len() > 1 && header.iter().any(|h| h == "label") && header.iter().any(|h| h == "youtube_id") {
        return csv_label_column(&lines, &header);
    }
    if let Some(names) = indexed(&lines)? {
        return Ok(names);
    }
    Ok(lines.iter().map(|(_, l)| l.to_string()).collect())
}

/// `index name` lines whose indices are exactly 0..n-1: names by index. `None` when the lines
/// are not all of that form (they are then plain names, even if some start with a number).
fn indexed(lines: &[(usize, &str)]) -> Result<Option<Vec<String>>> {
    let mut pairs = Vec::with_capacity(lines.len());
    for &(_, l) in lines {
        let Some((i, name)) = l.split_once(char::is_whitespace) else { return Ok(None) };
        let Ok(i) = i.parse::<usize>() else { return Ok(None) };
        pairs.push((i, name.trim().to_string()));
    }
    let mut names = vec![None; pairs.len()];
    for (i, name) in pairs {
        match names.get_mut(i) {
            Some(slot @ None) => *slot = Some(name),
            // Not a permutation of 0..n-1: read the lines as plain names.
            _ => return Ok(None),
        }
    }
    Ok(Some(names.into_iter().map(|n| n.expect("every index filled")).collect()))
}

fn csv_label_column(lines: &[(usize, &str)], header: &[String]) -> Result<Vec<String>> {
    let col = header.iter().position(|h| h == "label").expect("label column");
    let mut names = std::collections::BTreeSet::new();
    for &(n, l) in &lines[1..] {
        let fields = split_csv(l);
        let name = fields.get(col).with_context(|| format!("line {n}: no `label` field"))?;
        names.insert(name.clone());
    }
    if names.is_empty() {
        bail!("a Kinetics CSV without rows");
    }
    Ok(names.into_iter().collect())
}

/// One CSV line's fields; double quotes group (and `""` escapes a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    fields.push(cur.trim().to_string());
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_indexed_and_kinetics_csv_maps() {
        // MMAction2 label_map_k400.txt: one per line, spaces kept
        assert_eq!(
            parse_label_names("abseiling\nair drumming\n\n  answering questions \n").unwrap(),
            ["abseiling", "air drumming", "answering questions"]
        );
        // PaddleVideo Kinetics-400_label_list.txt: `index name`, any order
        assert_eq!(
            parse_label_names("1 air drumming\n0 abseiling\n2 answering questions\n").unwrap(),
            ["abseiling", "air drumming", "answering questions"]
        );
        // names that start with a number, not a 0..n-1 index: plain names
        assert_eq!(parse_label_names("3 point shot\n1 on 1\n").unwrap(), ["3 point shot", "1 on 1"]);
        // Kinetics annotation CSV: the sorted distinct values of its label column
        let csv = "label,youtube_id,time_start,time_end,split\n\
                   \"passing American football (in game)\",abc,10,20,train\n\
                   abseiling,def,0,10,train\n\
                   \"passing American football (in game)\",ghi,3,13,train\n";
        assert_eq!(parse_label_names(csv).unwrap(), ["abseiling", "passing American football (in game)"]);
        assert!(parse_label_names("\n\n").is_err());
        let bad = "label,youtube_id,time_start\n";
        assert!(parse_label_names(bad).unwrap_err().to_string().contains("without rows"));
    }
}
