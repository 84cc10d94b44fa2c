//! Just enough of NumPy's `.npz` format to read and write MedMNIST files: a zip archive (stored or
//! deflated, as `np.savez_compressed` writes) of `.npy` members, each a small text header followed
//! by the raw array in C order.
//!
//! Arrays are streamed out of the archive, so a caller can read a few rows of a large member, or
//! keep only selected rows, without holding the whole file in memory. Only integer dtypes are
//! understood: MedMNIST stores `uint8` images and labels.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use zip::read::ZipFile;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::error::{Context, Error, Result};

/// An integer element type, from the header's `descr` (`|u1`, `<i8`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
}

impl IntType {
    fn parse(descr: &str) -> Option<IntType> {
        let (order, kind) = descr.split_at(descr.len().min(1));
        if !matches!(order, "<" | "|" | "=") {
            return None;
        }
        Some(match kind {
            "u1" => IntType::U8,
            "i1" => IntType::I8,
            "u2" => IntType::U16,
            "i2" => IntType::I16,
            "u4" => IntType::U32,
            "i4" => IntType::I32,
            "u8" => IntType::U64,
            "i8" => IntType::I64,
            _ => return None,
        })
    }

    pub fn bytes(self) -> usize {
        match self {
            IntType::U8 | IntType::I8 => 1,
            IntType::U16 | IntType::I16 => 2,
            IntType::U32 | IntType::I32 => 4,
            IntType::U64 | IntType::I64 => 8,
        }
    }

    fn decode(self, b: &[u8]) -> i64 {
        match self {
            IntType::U8 => b[0] as i64,
            IntType::I8 => b[0] as i8 as i64,
            IntType::U16 => u16::from_le_bytes([b[0], b[1]]) as i64,
            IntType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            IntType::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            IntType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            IntType::U64 | IntType::I64 => {
                i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
        }
    }
}

/// A member's header: its raw `descr`, its integer type when it has one, and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub descr: String,
    pub int_type: Option<IntType>,
    pub shape: Vec<usize>,
}

impl NpyHeader {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open `.npz` file.
pub struct NpzReader {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
}

impl NpzReader {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let archive = ZipArchive::new(BufReader::new(file))
            .map_err(|e| Error::msg(format!("{}: not a .npz (zip) archive: {e}", path.display())))?;
        Ok(NpzReader { path: path.to_path_buf(), archive })
    }

    /// Array names, without the `.npy` suffix.
    pub fn keys(&self) -> Vec<String> {
        self.archive
            .file_names()
            .filter_map(|n| n.ok())
            .map(|n| n.trim_end_matches(".npy").to_string())
            .collect()
    }

    pub fn has(&self, key: &str) -> bool {
        self.archive.index_for_name(&format!("{key}.npy")).is_some()
    }

    /// Open one array for streaming; a missing key names the file and the keys it does hold.
    pub fn array(&mut self, key: &str) -> Result<NpyStream<'_>> {
        if !self.has(key) {
            let mut keys = self.keys();
            keys.sort();
            crate::bail!("{}: no array {key:?} (the file holds: {})", self.path.display(), keys.join(", "));
        }
        let path = self.path.display().to_string();
        let mut member = self
            .archive
            .by_name(&format!("{key}.npy"))
            .map_err(|e| Error::msg(format!("{path}: cannot open array {key:?}: {e}")))?;
        let header = read_header(&mut member).with_context(|| format!("{path}: array {key:?}"))?;
        Ok(NpyStream { header, member, context: format!("{path}: array {key:?}") })
    }
}

/// One array being read, row after row.
pub struct NpyStream<'a> {
    pub header: NpyHeader,
    member: ZipFile<'a, BufReader<File>>,
    context: String,
}

impl NpyStream<'_> {
    /// Fill `buf` with the next bytes of the array's data.
    pub fn read_bytes(&mut self, buf: &mut [u8]) -> Result<()> {
        self.member.read_exact(buf).map_err(|e| Error::msg(format!("{}: truncated data: {e}", self.context)))
    }

    /// The whole array as `i64`, for label arrays of any integer type.
    pub fn read_all_ints(&mut self) -> Result<Vec<i64>> {
        let Some(ty) = self.header.int_type else {
            crate::bail!("{}: dtype {}, expected an integer type", self.context, self.header.descr);
        };
        let mut raw = vec![0u8; self.header.len() * ty.bytes()];
        self.read_bytes(&mut raw)?;
        Ok(raw.chunks_exact(ty.bytes()).map(|b| ty.decode(b)).collect())
    }
}

fn read_header(r: &mut impl Read) -> Result<NpyHeader> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| Error::msg(format!("not a .npy array: {e}")))?;
    if &magic[..6] != b"\x93NUMPY" {
        crate::bail!("not a .npy array (bad magic bytes)");
    }
    let header_len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| Error::msg(format!("truncated .npy header: {e}")))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| Error::msg(format!("truncated .npy header: {e}")))?;
            u32::from_le_bytes(b) as usize
        }
        v => crate::bail!(".npy format version {v} is not supported"),
    };
    let mut text = vec![0u8; header_len];
    r.read_exact(&mut text).map_err(|e| Error::msg(format!("truncated .npy header: {e}")))?;
    parse_header_dict(&String::from_utf8_lossy(&text))
}

/// Parse `{'descr': '|u1', 'fortran_order': False, 'shape': (3, 28, 28), }`.
fn parse_header_dict(text: &str) -> Result<NpyHeader> {
    let value_after = |key: &str| -> Result<&str> {
        let at =
            text.find(&format!("'{key}'")).with_context(|| format!("bad .npy header, no {key}: {text}"))?;
        let rest = &text[at + key.len() + 2..];
        let colon = rest.find(':').with_context(|| format!("bad .npy header: {text}"))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr_rest = value_after("descr")?;
    let descr = descr_rest
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .with_context(|| format!("bad .npy header descr: {text}"))?
        .to_string();
    if value_after("fortran_order")?.starts_with("True") {
        crate::bail!("Fortran-ordered arrays are not supported; save with C order");
    }
    let shape_rest = value_after("shape")?;
    let inner = shape_rest
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .with_context(|| format!("bad .npy header shape: {text}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::msg(format!("bad .npy header shape {inner:?}: {e}")))?;
    Ok(NpyHeader { int_type: IntType::parse(&descr), descr, shape })
}

/// Writes `.npz` archives the way `np.savez_compressed` does, byte-identical for identical input
/// (fixed timestamps) so synthetic data sets can be compared by hash.
pub struct NpzWriter {
    path: PathBuf,
    zip: ZipWriter<BufWriter<File>>,
}

impl NpzWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(NpzWriter { path: path.to_path_buf(), zip: ZipWriter::new(BufWriter::new(file)) })
    }

    /// Add an array of `u8` (descr `|u1`) or little-endian `i64` (`<i8`) elements.
    pub fn add(&mut self, key: &str, shape: &[usize], data: NpyData<'_>) -> Result<()> {
        let (descr, bytes): (&str, std::borrow::Cow<'_, [u8]>) = match data {
            NpyData::U8(d) => ("|u1", d.into()),
            NpyData::I64(d) => ("<i8", d.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        };
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .last_modified_time(DateTime::default())
            .large_file(bytes.len() > u32::MAX as usize / 2);
        let context = || format!("{}: writing {key:?}", self.path.display());
        self.zip
            .start_file(format!("{key}.npy"), options)
            .map_err(|e| Error::msg(format!("{}: {e}", context())))?;
        self.zip
            .write_all(&npy_header(descr, shape))
            .map_err(|e| Error::msg(format!("{}: {e}", context())))?;
        self.zip.write_all(&bytes).map_err(|e| Error::msg(format!("{}: {e}", context())))
    }

    pub fn finish(self) -> Result<()> {
        let path = self.path;
        let mut inner = self.zip.finish().map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        inner.flush().map_err(|e| Error::io(&path, e))
    }
}

/// Element data for [`NpzWriter::add`].
pub enum NpyData<'a> {
    U8(&'a [u8]),
    I64(&'a [i64]),
}

/// A version-1 header padded to a 64-byte boundary, as NumPy writes it.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_arrays_read_back_with_their_shape_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npz");
        let mut w = NpzWriter::create(&path).unwrap();
        w.add("imgs", &[2, 3], NpyData::U8(&[1, 2, 3, 4, 5, 255])).unwrap();
        w.add("labels", &[2, 1], NpyData::I64(&[-1, 7])).unwrap();
        w.add("flag", &[1], NpyData::U8(&[1])).unwrap();
        w.finish().unwrap();

        let mut r = NpzReader::open(&path).unwrap();
        let mut keys = r.keys();
        keys.sort();
        assert_eq!(keys, ["flag", "imgs", "labels"]);
        {
            let mut imgs = r.array("imgs").unwrap();
            assert_eq!(imgs.header.shape, [2, 3]);
            assert_eq!(imgs.header.int_type, Some(IntType::U8));
            assert_eq!(imgs.read_all_ints().unwrap(), [1, 2, 3, 4, 5, 255]);
        }
        assert_eq!(r.array("labels").unwrap().read_all_ints().unwrap(), [-1, 7]);
        assert_eq!(r.array("flag").unwrap().header.shape, [1]);
    }

    #[test]
    fn numpy_header_variants_parse() {
        let h = parse_header_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }").unwrap();
        assert_eq!((h.descr.as_str(), h.int_type, h.shape), ("<f4", None, vec![10]));
        let h =
            parse_header_dict("{'descr': '|u1', 'fortran_order': False, 'shape': (5, 28, 28, 3), }").unwrap();
        assert_eq!(h.shape, [5, 28, 28, 3]);
        assert!(parse_header_dict("{'descr': '|u1', 'fortran_order': True, 'shape': (2,), }").is_err());
        assert_eq!(npy_header("|u1", &[3, 28, 28]).len() % 64, 0);
    }

    #[test]
    fn a_missing_key_lists_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npz");
        let mut w = NpzWriter::create(&path).unwrap();
        w.add("train_images", &[1], NpyData::U8(&[0])).unwrap();
        w.finish().unwrap();
        let err = NpzReader::open(&path).unwrap().array("test_images").err().unwrap().to_string();
        assert!(err.contains("no array \"test_images\"") && err.contains("train_images"), "{err}");
    }
}
