//! Writing PyTorch checkpoints (`torch.save`'s zip format, PyTorch ≥ 1.6) by hand: no libtorch, no
//! Python.
//!
//! A checkpoint is a zip archive with stored (uncompressed) entries, all under one folder (torch names
//! it after the file, `upsampler_only/` for `upsampler_only.pth`; readers take whatever the first entry
//! uses):
//!
//! ```text
//! upsampler_only/data.pkl     the object, pickled (protocol 2); tensors refer to storages by key
//! upsampler_only/byteorder    "little"
//! upsampler_only/data/0       storage "0": raw little-endian values, aligned to 64 bytes in the file
//! upsampler_only/data/1       …
//! upsampler_only/version      "3\n", the record format version torch writes for plain tensors
//! ```
//!
//! The pickle is what `torch.save({"state_dict": OrderedDict(...)})` produces, less the memo: each
//! tensor is `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())`, the
//! storage a persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)` that the loader resolves
//! to `data/{key}`. Every global it names (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch.FloatStorage`) is one `torch.load(weights_only=True)` allows.

use super::write_atomically;
use crate::error::{Error, Result};
use crate::upsampler::NamedTensor;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Alignment of the storages' bytes in the file (torch's default `storage_alignment`, which lets
/// `torch.load(mmap=True)` map them).
const STORAGE_ALIGNMENT: u16 = 64;

/// Writes `tensors` (float32, PyTorch's layout, contiguous) as a PyTorch checkpoint that
/// `torch.load(path, weights_only=True)` reads as `{"state_dict": OrderedDict({name: tensor, …})}`, in
/// the order given, atomically (a temporary sibling, synced, then renamed over `path`).
///
/// Errors: a tensor whose values do not fill its shape, an empty or repeated name ([`Error::Weights`]),
/// and I/O failures such as a missing folder ([`Error::Io`]); nothing is left at `path` then.
pub fn write_pth_state_dict(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    let bad = |m: String| Error::Weights(format!("{}: {m}", path.display()));
    let mut seen = HashSet::with_capacity(tensors.len());
    for t in tensors {
        t.check(path)?;
        if t.name.is_empty() || u32::try_from(t.name.len()).is_err() {
            return Err(bad(format!(
                "a tensor name must be 1 to 2³² − 1 bytes long; got {} bytes",
                t.name.len()
            )));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(bad(format!("tensor `{}` is given twice", t.name)));
        }
    }
    let pickle = state_dict_pickle(tensors);
    let folder = archive_folder(path);
    write_atomically(path, |file| {
        let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        let mut zip = ZipWriter::new(file);
        zip.start_file(format!("{folder}/data.pkl"), stored)?;
        zip.write_all(&pickle)?;
        zip.start_file(format!("{folder}/byteorder"), stored)?;
        zip.write_all(b"little")?;
        for (key, t) in tensors.iter().enumerate() {
            let bytes = t.le_bytes();
            let options = stored
                .with_alignment(STORAGE_ALIGNMENT)
                .large_file(bytes.len() >= u32::MAX as usize);
            zip.start_file(format!("{folder}/data/{key}"), options)?;
            zip.write_all(&bytes)?;
        }
        zip.start_file(format!("{folder}/version"), stored)?;
        zip.write_all(b"3\n")?;
        zip.finish()?;
        Ok(())
    })
}

/// The folder of the archive's entries: the file's name without its extension, as torch names it
/// (`archive` when that is empty or not UTF-8).
fn archive_folder(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("archive")
        .to_string()
}

/// `{"state_dict": OrderedDict([(name, tensor), …])}` pickled, tensor i stored under key `i`.
fn state_dict_pickle(tensors: &[NamedTensor]) -> Vec<u8> {
    let mut p = PickleWriter::default();
    p.proto();
    p.empty_dict();
    p.binunicode("state_dict");
    p.ordered_dict();
    if !tensors.is_empty() {
        p.mark();
        for (key, t) in tensors.iter().enumerate() {
            p.binunicode(&t.name);
            p.float_tensor(&key.to_string(), &t.shape);
        }
        p.setitems();
    }
    p.setitem();
    p.stop();
    p.into_bytes()
}

/// Row-major (contiguous) strides of `shape`, in elements, as torch computes them (a dimension of
/// size 0 counts as 1).
fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

/// A pickle (protocol 2) being written: one method per opcode used, plus the few composite objects a
/// state dict needs. Methods push onto the unpickler's stack as documented; nothing is memoised.
#[derive(Default)]
struct PickleWriter {
    out: Vec<u8>,
}

impl PickleWriter {
    /// `PROTO 2` (`\x80\x02`): the protocol header, first opcode of the stream.
    fn proto(&mut self) {
        self.out.extend_from_slice(&[0x80, 2]);
    }

    /// `EMPTY_DICT` (`}`): pushes `{}`.
    fn empty_dict(&mut self) {
        self.out.push(b'}');
    }

    /// `EMPTY_TUPLE` (`)`): pushes `()`.
    fn empty_tuple(&mut self) {
        self.out.push(b')');
    }

    /// `MARK` (`(`): marks the stack position that the next `TUPLE` / `SETITEMS` collects from.
    fn mark(&mut self) {
        self.out.push(b'(');
    }

    /// `TUPLE` (`t`): replaces everything above the last mark with one tuple of it.
    fn tuple(&mut self) {
        self.out.push(b't');
    }

    /// `BINUNICODE` (`X`, u32 little-endian byte length, UTF-8 bytes): pushes a `str`. `s` must be
    /// shorter than 4 GiB (checked by the caller).
    fn binunicode(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// `GLOBAL` (`c`, `module\n`, `name\n`): pushes the class or function `module.name`.
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        for part in [module, name] {
            self.out.extend_from_slice(part.as_bytes());
            self.out.push(b'\n');
        }
    }

    /// Pushes the non-negative `int` `v` in the shortest opcode: `BININT1` (`K`, one byte) up to 255,
    /// `BININT` (`J`, i32 little-endian) up to 2³¹ − 1, `LONG1` (`\x8a`, length byte, little-endian
    /// two's complement) beyond.
    fn int(&mut self, v: u64) {
        if let Ok(b) = u8::try_from(v) {
            self.out.extend_from_slice(&[b'K', b]);
        } else if let Ok(i) = i32::try_from(v) {
            self.out.push(b'J');
            self.out.extend_from_slice(&i.to_le_bytes());
        } else {
            let mut bytes = v.to_le_bytes().to_vec();
            while bytes.last() == Some(&0) {
                bytes.pop();
            }
            // A set top bit would read as negative: add a sign byte.
            if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                bytes.push(0);
            }
            self.out.extend_from_slice(&[0x8a, bytes.len() as u8]);
            self.out.extend_from_slice(&bytes);
        }
    }

    /// `NEWFALSE` (`\x89`): pushes `False`.
    fn newfalse(&mut self) {
        self.out.push(0x89);
    }

    /// `BINPERSID` (`Q`): replaces the top of the stack (a persistent id) with what the unpickler's
    /// `persistent_load` makes of it (torch: the storage it names).
    fn binpersid(&mut self) {
        self.out.push(b'Q');
    }

    /// `REDUCE` (`R`): pops an argument tuple and replaces the callable below it with `callable(*args)`.
    fn reduce(&mut self) {
        self.out.push(b'R');
    }

    /// `SETITEM` (`s`): pops a value and a key and sets `dict[key] = value` on the dict below them.
    fn setitem(&mut self) {
        self.out.push(b's');
    }

    /// `SETITEMS` (`u`): sets the key/value pairs above the last mark on the dict below the mark.
    fn setitems(&mut self) {
        self.out.push(b'u');
    }

    /// `STOP` (`.`): ends the stream; the top of the stack is the unpickled object.
    fn stop(&mut self) {
        self.out.push(b'.');
    }

    /// Pushes a tuple of the ints `values` (`MARK`, ints, `TUPLE`).
    fn int_tuple(&mut self, values: &[usize]) {
        self.mark();
        for &v in values {
            self.int(v as u64);
        }
        self.tuple();
    }

    /// Pushes an empty `collections.OrderedDict()` (its class, `()`, `REDUCE`).
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.empty_tuple();
        self.reduce();
    }

    /// Pushes a contiguous float32 CPU tensor of `shape` whose values are the storage `key`:
    /// `_rebuild_tensor_v2(persistent_load(('storage', FloatStorage, key, 'cpu', numel)), 0, shape,
    /// stride, False, OrderedDict())` (storage offset 0, no gradient, no backward hooks).
    fn float_tensor(&mut self, key: &str, shape: &[usize]) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.mark();
        self.mark();
        self.binunicode("storage");
        self.global("torch", "FloatStorage");
        self.binunicode(key);
        self.binunicode("cpu");
        self.int(shape.iter().product::<usize>() as u64);
        self.tuple();
        self.binpersid();
        self.int(0);
        self.int_tuple(shape);
        self.int_tuple(&contiguous_strides(shape));
        self.newfalse();
        self.ordered_dict();
        self.tuple();
        self.reduce();
    }

    fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(contiguous_strides(&[4, 3, 3, 3]), vec![27, 9, 3, 1]);
        assert_eq!(contiguous_strides(&[5]), vec![1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
        assert_eq!(contiguous_strides(&[2, 0, 3]), vec![3, 3, 1]);
    }

    #[test]
    fn ints_use_the_shortest_opcode() {
        let bytes = |v: u64| {
            let mut p = PickleWriter::default();
            p.int(v);
            p.into_bytes()
        };
        assert_eq!(bytes(7), vec![b'K', 7]);
        assert_eq!(bytes(256), vec![b'J', 0, 1, 0, 0]);
        assert_eq!(bytes(i32::MAX as u64), vec![b'J', 255, 255, 255, 127]);
        // 2³¹ needs a sign byte: 00 00 00 80 00.
        assert_eq!(bytes(1 << 31), vec![0x8a, 5, 0, 0, 0, 0x80, 0]);
        assert_eq!(bytes(1 << 32), vec![0x8a, 5, 0, 0, 0, 0, 1]);
    }

    /// The pickle of one 2×3 tensor, opcode by opcode (what `pickletools.dis` shows for
    /// `torch.save({'state_dict': OrderedDict(a=torch.ones(2, 3))})`, without the memo).
    #[test]
    fn one_tensor_state_dict_pickle() {
        let t = NamedTensor {
            name: "a".into(),
            shape: vec![2, 3],
            data: vec![1.0; 6],
        };
        let mut want: Vec<u8> = vec![0x80, 2, b'}'];
        let s = |want: &mut Vec<u8>, s: &str| {
            want.push(b'X');
            want.extend_from_slice(&(s.len() as u32).to_le_bytes());
            want.extend_from_slice(s.as_bytes());
        };
        s(&mut want, "state_dict");
        want.extend_from_slice(b"ccollections\nOrderedDict\n)R(");
        s(&mut want, "a");
        want.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        s(&mut want, "storage");
        want.extend_from_slice(b"ctorch\nFloatStorage\n");
        s(&mut want, "0");
        s(&mut want, "cpu");
        want.extend_from_slice(b"K\x06tQK\x00(K\x02K\x03t(K\x03K\x01t\x89");
        want.extend_from_slice(b"ccollections\nOrderedDict\n)RtRus.");
        assert_eq!(state_dict_pickle(&[t]), want);
    }

    #[test]
    fn archive_folder_is_the_file_stem() {
        assert_eq!(
            archive_folder(Path::new("/x/upsampler_only.pth")),
            "upsampler_only"
        );
        assert_eq!(archive_folder(Path::new("a.b.pth")), "a.b");
        assert_eq!(archive_folder(Path::new("model")), "model");
    }
}
