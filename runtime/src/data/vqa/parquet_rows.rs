//! Reading benchmark parquet files row by row with the `parquet` crate's record API (no Arrow),
//! and pulling typed values out of a row with errors that name the file, the row and the column.
//!
//! Only snappy-compressed pages (pyarrow's and the hub's default) are compiled in; a file written
//! with another codec fails with the codec's name, and re-saving it with pyarrow's defaults fixes
//! it.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use crate::error::{Error, Result};
use crate::image::Image;

/// Call `each(row_number, row)` for every row until it returns `false`, after checking that the
/// file has every `required` top-level column. Returns the file's number of rows.
pub(super) fn for_each_row(
    path: &Path,
    required: &[&str],
    mut each: impl FnMut(usize, &Row) -> Result<bool>,
) -> Result<usize> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let parquet_error = |e: parquet::errors::ParquetError| Error::msg(format!("{}: {e}", path.display()));
    let reader = SerializedFileReader::new(file).map_err(parquet_error)?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let columns: Vec<&str> = schema.root_schema().get_fields().iter().map(|f| f.name()).collect();
    if let Some(missing) = required.iter().find(|c| !columns.contains(c)) {
        crate::bail!("{}: no column `{missing}` (the file has: {})", path.display(), columns.join(", "));
    }
    let rows = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
    for (i, row) in reader.get_row_iter(None).map_err(parquet_error)?.enumerate() {
        let row = row.map_err(|e| Error::msg(format!("{}: row {i}: {e}", path.display())))?;
        if !each(i, &row)? {
            break;
        }
    }
    Ok(rows)
}

/// One cell, with its location for error messages.
pub(super) struct Cell<'a> {
    pub path: &'a Path,
    pub row: usize,
    pub column: &'a str,
    pub field: &'a Field,
}

impl<'a> Cell<'a> {
    pub fn get(path: &'a Path, row_number: usize, row: &'a Row, column: &'a str) -> Result<Cell<'a>> {
        match row.get_column_iter().find(|(name, _)| name.as_str() == column) {
            Some((_, field)) => Ok(Cell { path, row: row_number, column, field }),
            None => crate::bail!("{}: row {row_number}: no column `{column}`", path.display()),
        }
    }

    fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::msg(format!("{}: row {}, column `{}`: {what}", self.path.display(), self.row, self.column))
    }

    /// A string cell (UTF-8 binary is accepted too).
    pub fn text(&self) -> Result<String> {
        match self.field {
            Field::Str(s) => Ok(s.clone()),
            Field::Bytes(b) => {
                String::from_utf8(b.data().to_vec()).map_err(|_| self.error("bytes that are not UTF-8 text"))
            }
            Field::Null => Err(self.error("is empty (null)")),
            other => Err(self.error(format!("expected text, found {other}"))),
        }
    }

    /// Every image in the cell: raw bytes, a `{bytes, path}` struct (as `datasets` writes them),
    /// or a list of either.
    pub fn images(&self) -> Result<Vec<Image>> {
        let mut encoded = Vec::new();
        self.collect_bytes(self.field, &mut encoded)?;
        encoded
            .iter()
            .enumerate()
            .map(|(k, bytes)| Image::decode(bytes).map_err(|e| self.error(format!("image {k}: {e}"))))
            .collect()
    }

    fn collect_bytes<'f>(&self, field: &'f Field, out: &mut Vec<&'f [u8]>) -> Result<()> {
        match field {
            Field::Bytes(b) => out.push(b.data()),
            Field::ListInternal(list) => {
                for element in list.elements() {
                    self.collect_bytes(element, out)?;
                }
            }
            Field::Group(group) => match group.get_column_iter().find(|(name, _)| name.as_str() == "bytes") {
                Some((_, Field::Bytes(b))) => out.push(b.data()),
                Some((_, Field::Null)) => {
                    return Err(self
                        .error("an image struct with null bytes (images stored by path only are not read)"))
                }
                _ => return Err(self.error("an image struct without a `bytes` field")),
            },
            Field::Null => return Err(self.error("is empty (null), expected image bytes")),
            other => return Err(self.error(format!("expected image bytes, found {other}"))),
        }
        Ok(())
    }
}
