//! A small RFC 4180 writer with spreadsheet-formula neutralisation.
//!
//! Output rules:
//! - Records end with CRLF, as RFC 4180 section 2 specifies.
//! - A field is enclosed in double quotes when it contains a comma, a
//!   double quote, CR or LF, and each embedded double quote is doubled.
//! - Text is written as UTF-8 without a byte order mark.
//! - A [`Cell::Text`] that starts with `=`, `+`, `-`, `@`, tab or CR gets a
//!   leading `'`, as OWASP's CSV Injection guidance recommends, so that a
//!   spreadsheet shows it as text instead of running it as a formula.
//!   [`Cell::Number`] cells hold numbers we generate and are left alone, so
//!   a negative count stays a number.

use std::borrow::Cow;
use std::io::{self, Write};

use jiff::Timestamp;

/// Characters that make a spreadsheet read a cell as a formula when the
/// cell starts with one of them.
const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One field of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Text from users, devices or the store: neutralised and quoted as needed.
    Text(Cow<'a, str>),
    /// A number the exporter computed; written as is.
    Number(i64),
    Empty,
}

impl<'a> Cell<'a> {
    pub fn text(value: impl Into<Cow<'a, str>>) -> Self {
        Cell::Text(value.into())
    }

    /// A text cell, or an empty one for `None`.
    pub fn optional(value: Option<&'a str>) -> Self {
        value.map_or(Cell::Empty, Cell::text)
    }

    /// A UTC ISO 8601 time such as `2026-08-22T09:00:00Z` (fractional
    /// seconds only when the time has them).
    pub fn time(at: Timestamp) -> Self {
        Cell::Text(Cow::Owned(at.to_string()))
    }

    pub fn optional_time(at: Option<Timestamp>) -> Self {
        at.map_or(Cell::Empty, Cell::time)
    }

    pub fn boolean(value: bool) -> Self {
        Cell::text(if value { "true" } else { "false" })
    }
}

/// Writes CSV records to `W`. Wrap a file in a [`std::io::BufWriter`]: the
/// writer issues one small write per field.
pub struct CsvWriter<W: Write> {
    out: W,
    /// Records written, the header included.
    records: u64,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> Self {
        CsvWriter { out, records: 0 }
    }

    /// Writes the header row. Column names go through the same escaping
    /// as text cells.
    pub fn write_header(&mut self, names: &[&str]) -> io::Result<()> {
        let cells: Vec<Cell<'_>> = names.iter().map(|name| Cell::text(*name)).collect();
        self.write_record(&cells)
    }

    /// Writes one record followed by CRLF.
    pub fn write_record(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                self.out.write_all(b",")?;
            }
            match cell {
                Cell::Text(text) => write_text(&mut self.out, text)?,
                Cell::Number(number) => write!(self.out, "{number}")?,
                Cell::Empty => {}
            }
        }
        self.out.write_all(b"\r\n")?;
        self.records += 1;
        Ok(())
    }

    /// Records written so far, the header included.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Writes a text field: neutralised when it starts like a formula, quoted
/// when it contains a separator, a quote or a line break.
fn write_text(out: &mut impl Write, text: &str) -> io::Result<()> {
    let neutralise = text.starts_with(FORMULA_TRIGGERS);
    let quote = text.contains([',', '"', '\r', '\n']);
    if quote {
        out.write_all(b"\"")?;
    }
    if neutralise {
        out.write_all(b"'")?;
    }
    if quote {
        // Each '"' is written twice: once at the end of a segment and once
        // at the start of the next one.
        let mut segments = text.split('"');
        if let Some(first) = segments.next() {
            out.write_all(first.as_bytes())?;
        }
        for segment in segments {
            out.write_all(b"\"\"")?;
            out.write_all(segment.as_bytes())?;
        }
        out.write_all(b"\"")?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(cells: &[Cell<'_>]) -> String {
        let mut writer = CsvWriter::new(Vec::new());
        writer.write_record(cells).expect("write to a Vec");
        String::from_utf8(writer.into_inner()).expect("UTF-8")
    }

    #[test]
    fn fields_quoted_only_when_needed() {
        let cases = [
            ("plain", "plain\r\n"),
            ("a,b", "\"a,b\"\r\n"),
            ("say \"hi\"", "\"say \"\"hi\"\"\"\r\n"),
            ("\"", "\"\"\"\"\r\n"),
            ("line\nbreak", "\"line\nbreak\"\r\n"),
            ("carriage\rreturn", "\"carriage\rreturn\"\r\n"),
            ("", "\r\n"),
            ("Ünïcödé 東京 مرحبا", "Ünïcödé 東京 مرحبا\r\n"),
        ];
        for (text, expected) in cases {
            assert_eq!(render(&[Cell::text(text)]), expected, "field {text:?}");
        }
    }

    #[test]
    fn formula_cells_get_quote_prefix() {
        let cases = [
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\"\r\n"),
            ("+1", "'+1\r\n"),
            ("-1", "'-1\r\n"),
            ("@SUM(A1)", "'@SUM(A1)\r\n"),
            ("\tcmd", "'\tcmd\r\n"),
            ("\rcmd", "\"'\rcmd\"\r\n"),
            ("a=b", "a=b\r\n"),
        ];
        for (text, expected) in cases {
            assert_eq!(render(&[Cell::text(text)]), expected, "field {text:?}");
        }
    }

    #[test]
    fn numbers_are_not_neutralised() {
        assert_eq!(
            render(&[Cell::Number(-5), Cell::Number(0), Cell::Empty]),
            "-5,0,\r\n"
        );
    }

    #[test]
    fn times_are_utc_iso_8601() {
        let at: Timestamp = "2026-08-22T11:00:00+02:00".parse().expect("time");
        assert_eq!(render(&[Cell::time(at)]), "2026-08-22T09:00:00Z\r\n");
    }

    #[test]
    fn records_round_trip_through_csv_crate() {
        let rows: Vec<Vec<&str>> = vec![
            vec!["name", "note"],
            vec!["Mac, \"Pro\"", "line one\nline two"],
            vec!["iPad de Zoë", "東京オフィス, 3階"],
            vec!["crlf\r\ninside", ""],
        ];
        let mut writer = CsvWriter::new(Vec::new());
        for row in &rows {
            let cells: Vec<Cell<'_>> = row.iter().map(|t| Cell::text(*t)).collect();
            writer.write_record(&cells).expect("write");
        }
        assert_eq!(writer.records(), 4);
        let bytes = writer.into_inner();

        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        let read: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.expect("valid CSV").iter().map(str::to_string).collect())
            .collect();
        assert_eq!(read.len(), rows.len());
        for (got, expected) in read.iter().zip(&rows) {
            assert_eq!(got, expected);
        }
    }
}
