//! The initramfs: an uncompressed cpio archive in the "newc" format (magic 070701), what Linux
//! unpacks at boot and what our kernel reads back (with the no_std `cpio_reader` crate).
//!
//! ```text
//! /            directory
//! /init        the first program (`--init NAME`: a copy of bin/NAME; the shell starter for `make run`)
//! /bin/NAME    every user program
//! /bin/busybox busybox (`--busybox PATH`), and /bin/APPLET -> busybox for every applet it lists
//!              that no program of ours already names (/bin/sh among them)
//! /dev /proc /tmp   empty directories, mount points
//! ...          extra files given as SOURCE:PATH (the project's tools, /etc), with the source's mode
//! ```
//!
//! Symbolic links are entries of mode `S_IFLNK | 0777` whose data is the target, as Linux's
//! `initramfs` unpacker and `cpio -H newc` have them.
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
    Symlink {
        path: String,
        target: String,
    },
}

impl Item {
    fn path(&self) -> &str {
        match self {
            Item::Dir { path } | Item::File { path, .. } | Item::Symlink { path, .. } => path,
        }
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Writes the archive: directories before what they hold, then the trailer.
pub fn write<W: Write>(mut out: W, items: &mut [Item]) -> io::Result<W> {
    items.sort_by(|a, b| a.path().cmp(b.path()));
    for (index, item) in items.iter().enumerate() {
        let ino = u32::try_from(index + 1).expect("fewer than 2^32 entries");
        let (mode, nlink, data): (u32, u32, &[u8]) = match item {
            Item::Dir { .. } => (S_IFDIR | 0o755, 2, &[]),
            Item::File { data, mode, .. } => (S_IFREG | mode, 1, data),
            Item::Symlink { target, .. } => (S_IFLNK | 0o777, 1, target.as_bytes()),
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

/// Busybox for the archive: the binary and the applets it lists.
pub struct Busybox {
    pub binary: PathBuf,
    pub applets: Vec<String>,
}

impl Busybox {
    /// Ask the binary itself for its applets (`busybox --list`, one name a line), on the host.
    pub fn probe(binary: &Path) -> Result<Busybox, String> {
        let out = std::process::Command::new(binary)
            .arg("--list")
            .output()
            .map_err(|e| format!("{} --list: {e}", binary.display()))?;
        if !out.status.success() {
            return Err(format!("{} --list: {}", binary.display(), out.status));
        }
        let applets = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
            .map(String::from)
            .collect();
        Ok(Busybox {
            binary: binary.to_path_buf(),
            applets,
        })
    }
}

/// The items of our initramfs: `/init` from `init`, `/bin/NAME` for each binary, the mount-point
/// directories, the extra `(source, path)` files, and busybox with its applet links. An applet
/// whose name a file of ours already takes keeps our file (the link is skipped): those names are
/// returned beside the items.
pub fn items(
    init: &Path,
    binaries: &[PathBuf],
    extra: &[(PathBuf, String)],
    busybox: Option<&Busybox>,
) -> Result<(Vec<Item>, Vec<String>), String> {
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
        let mode = fs::metadata(source)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .map_err(|e| format!("{}: {e}", source.display()))?;
        items.push(Item::File {
            path,
            data: read(source)?,
            mode,
        });
    }
    let mut shadowed = Vec::new();
    if let Some(bb) = busybox {
        items.push(Item::File {
            path: "bin/busybox".into(),
            data: read(&bb.binary)?,
            mode: 0o755,
        });
        for applet in &bb.applets {
            let path = format!("bin/{applet}");
            if items.iter().any(|i| i.path() == path) {
                shadowed.push(applet.clone());
            } else {
                items.push(Item::Symlink {
                    path,
                    target: "busybox".into(),
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for item in &items {
        if !seen.insert(item.path().to_string()) {
            return Err(format!("{} would be in the archive twice", item.path()));
        }
    }
    Ok((items, shadowed))
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
    fn symlinks_are_newc_links_with_the_target_as_data() {
        let mut items = sample();
        items.push(Item::Symlink {
            path: "bin/sh".into(),
            target: "busybox".into(),
        });
        let bytes = write(Vec::new(), &mut items).unwrap();
        let link = cpio_reader::iter_files(&bytes)
            .find(|e| e.name() == "bin/sh")
            .expect("bin/sh in the archive");
        assert!(link.mode().contains(cpio_reader::Mode::SYMBOLIK_LINK));
        assert_eq!(link.file(), b"busybox");
        // The kernel's own reader sees the same entry as a link.
        let entry = abi::cpio::find(&bytes, "bin/sh").unwrap().expect("bin/sh");
        assert!(entry.is_symlink() && !entry.is_file());
        assert_eq!(entry.mode & 0o170000, S_IFLNK);
        assert_eq!(entry.data, b"busybox");
    }

    #[test]
    fn applets_become_links_unless_a_program_has_the_name() {
        let dir = std::env::temp_dir().join(format!("initramfs-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (init, time, bb) = (dir.join("init"), dir.join("time"), dir.join("busybox"));
        for p in [&init, &time, &bb] {
            fs::write(p, b"x").unwrap();
        }
        let busybox = Busybox {
            binary: bb,
            applets: vec!["sh".into(), "time".into(), "ls".into()],
        };
        let (items, shadowed) = items(&init, &[time], &[], Some(&busybox)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(shadowed, ["time"]);
        let links: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                Item::Symlink { path, target } if target == "busybox" => Some(path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(links, ["bin/sh", "bin/ls"]);
        assert!(
            items
                .iter()
                .any(|i| matches!(i, Item::File { path, .. } if path == "bin/time"))
        );
    }

    #[test]
    fn reproducible() {
        let a = write(Vec::new(), &mut sample()).unwrap();
        let b = write(Vec::new(), &mut sample()).unwrap();
        assert_eq!(a, b);
    }
}
