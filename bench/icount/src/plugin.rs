//! The QEMU entry points: install, the translation callback that cuts blocks into segments, the
//! execution callback that feeds them to the vCPU's state, and the exit callback that prints.
//!
//! QEMU resolves the `qemu_plugin_*` functions when it loads this library; the library exports
//! `qemu_plugin_version` and `qemu_plugin_install`. Callbacks run on the vCPU threads (one per
//! vCPU under multi-threaded TCG), so each vCPU's state has its own lock, which only the exit
//! callback ever contends.

use std::{
    collections::HashSet,
    ffi::{CStr, CString, c_char, c_int, c_uint, c_void},
    fs,
    sync::{Mutex, OnceLock},
};

use qemu_plugin_sys::{
    QEMU_PLUGIN_VERSION, qemu_info_t, qemu_plugin_cb_flags, qemu_plugin_id_t, qemu_plugin_insn, qemu_plugin_insn_size,
    qemu_plugin_insn_vaddr, qemu_plugin_outs, qemu_plugin_register_atexit_cb, qemu_plugin_register_vcpu_insn_exec_cb,
    qemu_plugin_register_vcpu_tb_trans_cb, qemu_plugin_tb, qemu_plugin_tb_get_insn, qemu_plugin_tb_n_insns,
};

use crate::count::{self, Profile, Segment, Vcpu};

/// The plugin API version this library was built for; QEMU refuses versions outside its range.
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = QEMU_PLUGIN_VERSION as c_int;

struct Plugin {
    vectors: Vec<(u64, u64)>,
    out: Option<String>,
    /// `profile=FILE`: where instructions in windows ran, by address (see `count::Profile`).
    profile: Option<String>,
    vcpus: Vec<Mutex<(Vcpu, Option<Profile>)>>,
    /// Every distinct segment translated so far. QEMU retranslates the same code after a flush;
    /// interning keeps one copy, which lives as long as QEMU (callbacks may point to it).
    segments: Mutex<HashSet<&'static Segment>>,
}

static PLUGIN: OnceLock<Plugin> = OnceLock::new();

fn say(text: &str) {
    if let Ok(text) = CString::new(format!("{text}\n")) {
        // SAFETY: a NUL-terminated string that outlives the call; QEMU copies it to its log.
        unsafe { qemu_plugin_outs(text.as_ptr()) };
    }
}

/// Called by QEMU once, when it loads the plugin.
///
/// # Safety
/// QEMU passes a valid `info` and `argc` NUL-terminated strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: qemu_plugin_id_t,
    info: *const qemu_info_t,
    argc: c_int,
    argv: *mut *mut c_char,
) -> c_int {
    let mut vectors = Vec::new();
    let mut out = None;
    let mut profile = None;
    for i in 0..usize::try_from(argc).unwrap_or(0) {
        // SAFETY: QEMU's contract: `argv` holds `argc` valid C strings.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) }.to_string_lossy();
        match arg.split_once('=') {
            Some(("vectors", range)) => match crate::parse_range(range) {
                Ok(range) => vectors.push(range),
                Err(why) => {
                    say(&format!("icount: vectors={range}: {why}"));
                    return -1;
                }
            },
            Some(("out", path)) => out = Some(path.to_owned()),
            Some(("profile", path)) => profile = Some(path.to_owned()),
            _ => {
                say(&format!("icount: unknown argument `{arg}` (takes out=FILE, vectors=START-END and profile=FILE)"));
                return -1;
            }
        }
    }
    // SAFETY: QEMU passes a valid `info`; `system` is the union's only member, meaningful in
    // system emulation (user mode has one vCPU per thread and no kernel half to count).
    let (system, max_vcpus) = unsafe {
        let info = &*info;
        (info.system_emulation, info.__bindgen_anon_1.system.max_vcpus)
    };
    if !system {
        say("icount: system emulation only");
        return -1;
    }
    let vcpus =
        (0..max_vcpus.max(1)).map(|_| Mutex::new((Vcpu::default(), profile.as_ref().map(|_| Profile::default())))).collect();
    if PLUGIN.set(Plugin { vectors, out, profile, vcpus, segments: Mutex::new(HashSet::new()) }).is_err() {
        say("icount: installed twice");
        return -1;
    }
    // SAFETY: plain registrations of `extern "C"` callbacks with the id QEMU gave us.
    unsafe {
        qemu_plugin_register_vcpu_tb_trans_cb(id, Some(on_translate));
        qemu_plugin_register_atexit_cb(id, Some(on_exit), std::ptr::null_mut());
    }
    0
}

/// The bytes of `insn` (at most 16, the longest x86 instruction).
///
/// # Safety
/// `insn` is a handle QEMU passed to the current translation callback.
unsafe fn insn_bytes(insn: *const qemu_plugin_insn) -> Vec<u8> {
    // SAFETY: the caller's handle is valid for the callback's duration.
    let size = unsafe { qemu_plugin_insn_size(insn) }.min(16);
    #[cfg(feature = "api-v1")]
    {
        // SAFETY: API 1 returns a pointer to the instruction's `size` bytes, valid during the
        // callback.
        let data = unsafe { qemu_plugin_sys::qemu_plugin_insn_data(insn) }.cast::<u8>();
        // SAFETY: as above; copied out at once.
        unsafe { std::slice::from_raw_parts(data, size) }.to_vec()
    }
    #[cfg(feature = "api-v4")]
    {
        let mut bytes = vec![0u8; size];
        // SAFETY: API 4 copies at most `size` bytes into our buffer of that length.
        let copied = unsafe { qemu_plugin_sys::qemu_plugin_insn_data(insn, bytes.as_mut_ptr().cast(), size) };
        bytes.truncate(copied);
        bytes
    }
}

extern "C" fn on_translate(_id: qemu_plugin_id_t, tb: *mut qemu_plugin_tb) {
    let Some(plugin) = PLUGIN.get() else { return };
    // SAFETY: `tb` is the handle of this translation, valid during the callback; each index is
    // below its instruction count.
    let insns: Vec<(*mut qemu_plugin_insn, u64, Vec<u8>)> = unsafe {
        (0..qemu_plugin_tb_n_insns(tb))
            .map(|i| {
                let insn = qemu_plugin_tb_get_insn(tb, i);
                (insn, qemu_plugin_insn_vaddr(insn), insn_bytes(insn))
            })
            .collect()
    };
    let listed: Vec<(u64, &[u8])> = insns.iter().map(|(_, vaddr, bytes)| (*vaddr, bytes.as_slice())).collect();
    for (index, segment) in count::segments(&listed, &plugin.vectors) {
        let segment: &'static Segment = {
            let mut interned = plugin.segments.lock().unwrap_or_else(|e| e.into_inner());
            match interned.get(&segment) {
                Some(&known) => known,
                None => {
                    let leaked: &'static Segment = Box::leak(Box::new(segment));
                    interned.insert(leaked);
                    leaked
                }
            }
        };
        // SAFETY: the instruction handle belongs to this translation; the user data is a
        // `&'static Segment` that is never freed and only read.
        unsafe {
            qemu_plugin_register_vcpu_insn_exec_cb(
                insns[index].0,
                Some(on_execute),
                qemu_plugin_cb_flags::QEMU_PLUGIN_CB_NO_REGS,
                (segment as *const Segment).cast_mut().cast::<c_void>(),
            );
        }
    }
}

extern "C" fn on_execute(vcpu_index: c_uint, userdata: *mut c_void) {
    let Some(plugin) = PLUGIN.get() else { return };
    // SAFETY: the user data registered in `on_translate`: a leaked, immutable `Segment`.
    let segment = unsafe { &*userdata.cast::<Segment>() };
    if let Some(vcpu) = plugin.vcpus.get(vcpu_index as usize) {
        let mut state = vcpu.lock().unwrap_or_else(|e| e.into_inner());
        let (vcpu, profile) = &mut *state;
        let taken_back = vcpu.execute(segment);
        if let Some(profile) = profile {
            if let Some((tag, start)) = taken_back {
                profile.take_back(tag, start);
            }
            if let Some(tag) = vcpu.open_tag() {
                profile.record(tag, segment);
            }
        }
    }
}

extern "C" fn on_exit(_id: qemu_plugin_id_t, _userdata: *mut c_void) {
    let Some(plugin) = PLUGIN.get() else { return };
    let mut text = format!(
        "icount begin api={} vcpus={} vectors={}\n",
        QEMU_PLUGIN_VERSION,
        plugin.vcpus.len(),
        plugin.vectors.len()
    );
    let mut profile = Profile::default();
    for (index, vcpu) in plugin.vcpus.iter().enumerate() {
        let state = vcpu.lock().unwrap_or_else(|e| e.into_inner());
        for (tag, stats) in state.0.stats() {
            text.push_str(&count::line(*tag, index, stats));
            text.push('\n');
        }
        if let Some(p) = &state.1 {
            profile.merge(p);
        }
    }
    if let Some(path) = &plugin.profile
        && let Err(why) = fs::write(path, profile.lines())
    {
        say(&format!("icount: writing {path}: {why}"));
    }
    text.push_str("icount end\n");
    match &plugin.out {
        Some(path) => {
            if let Err(why) = fs::write(path, &text) {
                say(&format!("icount: writing {path}: {why}"));
            }
        }
        None => say(text.trim_end()),
    }
}
