//! Rows printed as an aligned table (terminals), CSV (RFC 4180) or JSON (an array of objects,
//! one per row).

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
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Int(n) => n.to_string(),
            Cell::Float(x) => format!("{x:.4}"),
            Cell::Text(s) => s.clone(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(n) => Value::from(*n),
            Cell::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Cell::Text(s) => Value::from(s.as_str()),
        }
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
}

impl Rows {
    pub fn new(columns: &[&'static str]) -> Rows {
        Rows {
            columns: columns.to_vec(),
            rows: Vec::new(),
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
                    out += &line(row.iter().map(Cell::text).collect());
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
                    .map(|i| {
                        self.rows
                            .iter()
                            .all(|r| matches!(r[i], Cell::Int(_) | Cell::Float(_) | Cell::Null))
                    })
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
                out
            }
        }
    }

    /// Prints the rows to stdout; a closed pipe (`| head`) is not an error.
    pub fn print(&self, format: Format) {
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

    #[test]
    fn tables_align_numbers_right_and_text_left() {
        let t = sample().render(Format::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "id  name           rate");
        assert_eq!(lines[2], " 1  a, \"quoted\"  0.5000");
        assert_eq!(lines[3], "22");
    }
}
