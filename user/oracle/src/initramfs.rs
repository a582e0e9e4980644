//! The initramfs: an uncompressed cpio archive in the "newc" format (magic 070701), what Linux
//! unpacks at boot and what our kernel reads back (with the no_std `cpio_reader` crate).
//!
//! ```text
//! /            directory
//! /init        the demonstration init (a copy of bin/init)
//! /bin/NAME    every user program
//! /dev /proc /tmp   empty directories, mount points for later
//! ...          extra files given as SOURCE:PATH (busybox later)
//! ```
//!
//! Written with the `cpio` crate rather than by Debian's `cpio -o -H newc`: the archive is then
//! byte-for-byte reproducible (inode numbers counted from 1, owner root, mtime 0, entries sorted)
//! whatever the host's file system, umask or user, and no host tool is needed for it.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

/// One entry of the archive.
pub enum Item {
    Dir {
        path: String,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
}

impl Item {
    fn path(&self) -> &str {
        match self {
            Item::Dir { path } | Item::File { path, .. } => path,
        }
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

/// Writes the archive: directories before what they hold, then the trailer.
pub fn write<W: Write>(mut out: W, items: &mut [Item]) -> io::Result<W> {
    items.sort_by(|a, b| a.path().cmp(b.path()));
    for (index, item) in items.iter().enumerate() {
        let ino = u32::try_from(index + 1).expect("fewer than 2^32 entries");
        let (mode, nlink, data): (u32, u32, &[u8]) = match item {
            Item::Dir { .. } => (S_IFDIR | 0o755, 2, &[]),
            Item::File { data, mode, .. } => (S_IFREG | mode, 1, data),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is over 4 GiB", item.path()),
            )
        })?;
        let mut writer = cpio::newc::Builder::new(item.path())
            .ino(ino)
            .mode(mode)
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(0)
            .write(out, size);
        writer.write_all(data)?;
        out = writer.finish()?;
    }
    cpio::newc::trailer(out)
}

/// The items of our initramfs: `/init` from `init`, `/bin/NAME` for each binary, the mount-point
/// directories, and the extra `(source, path)` files.
pub fn items(
    init: &Path,
    binaries: &[PathBuf],
    extra: &[(PathBuf, String)],
) -> Result<Vec<Item>, String> {
    let read = |path: &Path| fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let mut items = vec![
        Item::Dir { path: ".".into() },
        Item::Dir { path: "bin".into() },
        Item::Dir { path: "dev".into() },
        Item::Dir {
            path: "proc".into(),
        },
        Item::Dir { path: "tmp".into() },
        Item::File {
            path: "init".into(),
            data: read(init)?,
            mode: 0o755,
        },
    ];
    for binary in binaries {
        let name = binary
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: no name", binary.display()))?;
        items.push(Item::File {
            path: format!("bin/{name}"),
            data: read(binary)?,
            mode: 0o755,
        });
    }
    for (source, path) in extra {
        let path = path.trim_start_matches('/').to_string();
        let mut dir = Path::new(&path).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            let d_str = d.to_string_lossy().into_owned();
            if !items.iter().any(|i| i.path() == d_str) {
                items.push(Item::Dir { path: d_str });
            }
            dir = d.parent();
        }
        items.push(Item::File {
            path,
            data: read(source)?,
            mode: 0o755,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for item in &items {
        if !seen.insert(item.path().to_string()) {
            return Err(format!("{} would be in the archive twice", item.path()));
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Item> {
        vec![
            Item::File {
                path: "init".into(),
                data: b"\x7fELF init".to_vec(),
                mode: 0o755,
            },
            Item::Dir { path: "bin".into() },
            Item::File {
                path: "bin/hello".into(),
                data: b"odd length!".to_vec(),
                mode: 0o755,
            },
            Item::Dir { path: ".".into() },
        ]
    }

    #[test]
    fn the_kernel_side_reader_sees_every_entry() {
        let bytes = write(Vec::new(), &mut sample()).unwrap();
        let entries: Vec<_> = cpio_reader::iter_files(&bytes).collect();
        let names: Vec<&str> = entries.iter().map(|e| e.name()).collect();
        assert_eq!(names, [".", "bin", "bin/hello", "init"]);
        assert_eq!(entries[2].file(), b"odd length!");
        assert_eq!(entries[3].file(), b"\x7fELF init");
        assert!(entries[1].mode().contains(cpio_reader::Mode::DIRECTORY));
        assert!(entries[3].mode().contains(cpio_reader::Mode::REGULAR_FILE));
        assert_eq!(entries[3].uid(), 0);
        assert_eq!(entries[3].mtime(), 0);
    }

    #[test]
    fn newc_layout_and_trailer() {
        let bytes = write(Vec::new(), &mut sample()).unwrap();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn reproducible() {
        let a = write(Vec::new(), &mut sample()).unwrap();
        let b = write(Vec::new(), &mut sample()).unwrap();
        assert_eq!(a, b);
    }
}
