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

/// The contents of the regular file at `path`, if the archive has one (symbolic links are not
/// followed).
pub fn file(path: &str) -> Option<&'static [u8]> {
    let a = *ARCHIVE.get()?;
    match abi::cpio::find(a, path) {
        Ok(Some(e)) if e.is_file() => Some(e.data),
        _ => None,
    }
}
