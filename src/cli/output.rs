//! Rows printed as an aligned table (terminals), CSV (RFC 4180) or JSON (an array of objects,
//! one per row). Tweet IDs are numbers in tables and CSV and strings in JSON, as X writes them
//! (`id_str`): above 2^53 a JSON number is rounded by JavaScript, jq 1.6 and many other tools.

use std::io::{IsTerminal, Write};

use serde_json::{Map, Value};

use super::Format;

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    /// A Tweet ID: a number in tables and CSV, a string in JSON.
    Id(u64),
    /// A value with a mark after it in tables (`*` pointing at a footnote), the bare value in
    /// CSV and JSON.
    Marked(Box<Cell>, &'static str),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Int(n) => n.to_string(),
            Cell::Float(x) => format!("{x:.4}"),
            Cell::Text(s) => s.clone(),
            Cell::Id(id) => id.to_string(),
            Cell::Marked(cell, mark) => format!("{}{mark}", cell.text()),
        }
    }

    /// The text of a CSV field: without marks.
    fn bare(&self) -> String {
        match self {
            Cell::Marked(cell, _) => cell.bare(),
            cell => cell.text(),
        }
    }

    /// Whether a table aligns it to the right.
    fn is_numeric(&self) -> bool {
        match self {
            Cell::Int(_) | Cell::Float(_) | Cell::Null | Cell::Id(_) => true,
            Cell::Text(_) => false,
            Cell::Marked(cell, _) => cell.is_numeric(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(n) => Value::from(*n),
            Cell::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Cell::Text(s) => Value::from(s.as_str()),
            Cell::Id(id) => Value::from(id.to_string()),
            Cell::Marked(cell, _) => cell.json(),
        }
    }
}

impl From<crate::domain::TweetId> for Cell {
    fn from(id: crate::domain::TweetId) -> Cell {
        Cell::Id(id.get())
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Cell {
        Cell::Int(n)
    }
}

impl From<Option<i64>> for Cell {
    fn from(n: Option<i64>) -> Cell {
        n.map_or(Cell::Null, Cell::Int)
    }
}

impl From<f64> for Cell {
    fn from(x: f64) -> Cell {
        Cell::Float(x)
    }
}

impl From<Option<f64>> for Cell {
    fn from(x: Option<f64>) -> Cell {
        x.map_or(Cell::Null, Cell::Float)
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }
}

impl From<Option<String>> for Cell {
    fn from(s: Option<String>) -> Cell {
        s.map_or(Cell::Null, Cell::Text)
    }
}

/// A result set.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// Lines printed under a table (not in CSV or JSON): what marks and columns mean.
    pub footnotes: Vec<String>,
    /// Said on stderr whatever the format: why there are no rows, or what they leave out.
    pub notice: Option<String>,
}

impl Rows {
    pub fn new(columns: &[&'static str]) -> Rows {
        Rows {
            columns: columns.to_vec(),
            ..Rows::default()
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// The rows in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let array: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|row| {
                        let object: Map<String, Value> = self
                            .columns
                            .iter()
                            .zip(row)
                            .map(|(c, v)| (c.to_string(), v.json()))
                            .collect();
                        Value::Object(object)
                    })
                    .collect();
                let mut out = serde_json::to_string_pretty(&array).expect("JSON values serialize");
                out.push('\n');
                out
            }
            Format::Csv => {
                let mut out = String::new();
                let line = |cells: Vec<String>| {
                    cells
                        .iter()
                        .map(|c| csv_field(c))
                        .collect::<Vec<_>>()
                        .join(",")
                        + "\r\n"
                };
                out += &line(self.columns.iter().map(|c| c.to_string()).collect());
                for row in &self.rows {
                    out += &line(row.iter().map(Cell::bare).collect());
                }
                out
            }
            Format::Table => {
                let texts: Vec<Vec<String>> = self
                    .rows
                    .iter()
                    .map(|r| r.iter().map(Cell::text).collect())
                    .collect();
                let widths: Vec<usize> = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        texts
                            .iter()
                            .map(|r| r[i].chars().count())
                            .chain([c.len()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let numeric: Vec<bool> = (0..self.columns.len())
                    .map(|i| self.rows.iter().all(|r| r[i].is_numeric()))
                    .collect();
                let mut out = String::new();
                let mut line = |cells: &[String]| {
                    let parts: Vec<String> = cells
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            if numeric[i] {
                                format!("{c:>w$}", w = widths[i])
                            } else {
                                format!("{c:<w$}", w = widths[i])
                            }
                        })
                        .collect();
                    out += parts.join("  ").trim_end();
                    out.push('\n');
                };
                let header: Vec<String> = self.columns.iter().map(|c| c.to_string()).collect();
                line(&header);
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                line(&rule);
                for row in &texts {
                    line(row);
                }
                if self.rows.is_empty() {
                    out += "(no rows)\n";
                }
                for note in &self.footnotes {
                    out += note;
                    out.push('\n');
                }
                out
            }
        }
    }

    /// Prints the rows to stdout, and the notice to stderr; a closed pipe (`| head`) is not an
    /// error.
    pub fn print(&self, format: Format) {
        if let Some(notice) = &self.notice {
            eprintln!("{notice}");
        }
        emit(&self.render(format));
    }
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `--format` when given; otherwise a table on a terminal, CSV in a pipe.
pub fn chosen(format: Option<Format>) -> Format {
    format.unwrap_or_else(|| {
        if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Csv
        }
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rows {
        let mut rows = Rows::new(&["id", "name", "rate"]);
        rows.push(vec![1.into(), "a, \"quoted\"".into(), 0.5.into()]);
        rows.push(vec![22.into(), Cell::Null, Cell::Null]);
        rows
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(
            sample().render(Format::Csv),
            "id,name,rate\r\n1,\"a, \"\"quoted\"\"\",0.5000\r\n22,,\r\n"
        );
    }

    #[test]
    fn json_is_an_array_of_objects_with_typed_values() {
        let v: Value = serde_json::from_str(&sample().render(Format::Json)).unwrap();
        assert_eq!(v[0]["id"], 1);
        assert_eq!(v[0]["rate"], 0.5);
        assert_eq!(v[1]["name"], Value::Null);
        assert_eq!(v.as_array().unwrap().len(), 2);
    }

    /// Tweet IDs above 2^53 are strings in JSON, exact; numbers in CSV and tables.
    #[test]
    fn tweet_ids_are_strings_in_json_only() {
        let id = 2_084_074_144_018_969_623_u64;
        let mut rows = Rows::new(&["tweet_id", "value"]);
        rows.push(vec![Cell::Id(id), 3.into()]);
        let v: Value = serde_json::from_str(&rows.render(Format::Json)).unwrap();
        assert_eq!(v[0]["tweet_id"], Value::from(id.to_string()));
        assert_eq!(v[0]["value"], 3);
        assert_eq!(
            rows.render(Format::Csv),
            format!("tweet_id,value\r\n{id},3\r\n")
        );
        assert!(rows.render(Format::Table).contains(&format!("{id}      3")));
    }

    /// A marked value reads with its mark in tables, bare in CSV and JSON; footnotes are in
    /// tables only.
    #[test]
    fn marks_and_footnotes_are_for_people() {
        let mut rows = Rows::new(&["owner", "impressions"]);
        rows.push(vec![
            "acme".into(),
            Cell::Marked(Box::new(1200.into()), "*"),
        ]);
        rows.push(vec!["bob".into(), Cell::Marked(Box::new(7.into()), " ")]);
        rows.footnotes.push("* partly known".into());
        let table = rows.render(Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[2], "acme         1200*");
        assert_eq!(
            lines[3], "bob             7",
            "digits aligned, the mark after them"
        );
        assert_eq!(lines[4], "* partly known");
        let v: Value = serde_json::from_str(&rows.render(Format::Json)).unwrap();
        assert_eq!(v[0]["impressions"], 1200);
        assert_eq!(
            rows.render(Format::Csv),
            "owner,impressions\r\nacme,1200\r\nbob,7\r\n"
        );
    }

    #[test]
    fn tables_align_numbers_right_and_text_left() {
        let t = sample().render(Format::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "id  name           rate");
        assert_eq!(lines[2], " 1  a, \"quoted\"  0.5000");
        assert_eq!(lines[3], "22");
    }
}
