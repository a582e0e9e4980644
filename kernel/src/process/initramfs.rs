//! The initramfs: the first boot module, a cpio "newc" archive, read in place.
//!
//! Neighbours: `boot` found and reserved it (PVH module 0 or Limine's first module); `abi::cpio`
//! reads it; [`crate::process::spawn`] takes programs from it.

static ARCHIVE: spin::Once<&'static [u8]> = spin::Once::new();

/// Keep the archive (called once at boot) and report its size and members.
pub fn init(archive: Option<&'static [u8]>) {
    let Some(a) = archive else {
        log::info!("initramfs: none (no boot module); user programs cannot start");
        return;
    };
    ARCHIVE.call_once(|| a);
    let mut files = 0;
    for e in abi::cpio::entries(a) {
        match e {
            Ok(e) if e.is_file() => files += 1,
            Ok(_) => {}
            Err(err) => {
                log::warn!("initramfs: {err:?}; members after it are not seen");
                break;
            }
        }
    }
    log::info!("initramfs: {} KiB, {files} files", a.len() / 1024);
}

/// Whether the boot brought an initramfs.
pub fn present() -> bool {
    ARCHIVE.get().is_some()
}

/// The contents of the regular file at `path`, following symbolic links (busybox's applets are
/// links to it): a relative target is taken from the link's folder; more than 8 links in a row is
/// a loop, as Linux's ELOOP limit for nested links.
pub fn file(path: &str) -> Option<&'static [u8]> {
    let a = *ARCHIVE.get()?;
    let mut path = alloc::string::String::from(path);
    for _ in 0..=8 {
        match abi::cpio::find(a, &path) {
            Ok(Some(e)) if e.is_file() => return Some(e.data),
            Ok(Some(e)) if e.is_symlink() => {
                let target = core::str::from_utf8(e.data).ok()?;
                path = match (target.starts_with('/'), path.rfind('/')) {
                    (false, Some(slash)) => alloc::format!("{}/{target}", &path[..slash]),
                    _ => target.into(),
                };
            }
            _ => return None,
        }
    }
    None
}
