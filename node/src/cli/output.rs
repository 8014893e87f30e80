//! How the CLI prints: a column-aligned table by default, JSON with `--format json`. Every
//! command builds one report value that serializes to its JSON form and renders its table, so
//! the two never disagree; the renderers are pure (no IO), and the insta snapshots in this
//! module's tests pin them.

use std::io::Write;

use serde::Serialize;

/// The output format of the admin commands (`consume` has its own, [`RecordFormat`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document for programs.
    Json,
}

/// `consume`'s output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// The value, one record per line (`KEY<separator>VALUE` with `--key-separator`).
    #[default]
    Text,
    /// One JSON object per record and line: partition, offset, timestamp, key, value, headers.
    Json,
}

/// A report a command prints: its table, and its JSON form through `Serialize`.
pub trait Report: Serialize {
    /// The table (or key-value lines) a person reads; ends with a newline.
    fn table(&self) -> String;
}

/// Renders `report` in `format`.
pub fn render<R: Report>(report: &R, format: Format) -> String {
    match format {
        Format::Table => report.table(),
        Format::Json => {
            // A report is plain data (strings, numbers, maps with string keys): it always
            // serializes.
            let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

/// Writes `text` to stdout. A closed pipe (`railyard consume t | head`) is not an error of the
/// command: the reader has what it wanted.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Column-aligned rows under an upper-case header, columns two spaces apart.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (short rows are padded with empty cells).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The aligned text; the last column is not padded.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines, keys aligned (a described object's summary).
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// A list of broker ids as `1,2,3`.
pub fn ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// An optional number, `-` when absent.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_table_aligns_columns_and_pads_short_rows() {
        let mut t = Table::new(&["name", "partitions", "replicas"]);
        t.row(vec!["events".into(), "3".into(), "3".into()]);
        t.row(vec!["a-much-longer-name".into(), "12".into()]);
        insta::assert_snapshot!(t.render(), @r"
        NAME                PARTITIONS  REPLICAS
        events              3           3
        a-much-longer-name  12
        ");
    }

    #[test]
    fn test_key_values_align_keys() {
        let s = key_values(&[("name", "events".into()), ("partitions", "3".into())]);
        assert_eq!(s, "name        events\npartitions  3\n");
        assert_eq!(ids(&[1, 2, 3]), "1,2,3");
        assert_eq!(or_dash::<i64>(None), "-");
    }
}
