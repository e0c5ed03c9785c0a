//! In-process probing and decoding through the system FFmpeg 5.1 libraries (lib/csrc/vk_decode.c,
//! compiled by lib/build.rs): the same answers and the same frames, byte for byte, as `probe` and
//! the CLI path of `decode_frames`, without starting a process (~0.1 s each here, DESIGN.md §6).
//! Where keyframes lie between the wanted frames it seeks, and it lets the decoder skip unwanted
//! non-reference frames; frame numbers stay the decoder-output index that the CLI's `select`
//! counts (vk_decode.c checks every frame against a packet index and falls back to counting).
//! A binary that calls into this module loads libavformat/libavcodec and their ~140 shared
//! libraries at start (~40 ms here, once per process); binaries that do not, do not link them.

use super::probe::stderr_reason;
use super::{decode_each_cli, decode_frames, DecodedFrames, FrameSink, VideoInfo};
use anyhow::{anyhow, bail, Result};
use ndarray::{Array4, ArrayView3};
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// Return codes of vk_decode.h.
const VK_ERR_OPEN: c_int = -1;
const VK_ERR_NO_VIDEO: c_int = -2;
const VK_ERR_UNSUPPORTED: c_int = -3;
const VK_ERR_DECODE: c_int = -4;
const VK_ERR_STOPPED: c_int = -6;

/// `vk_info` of vk_decode.h.
#[repr(C)]
struct VkInfo {
    width: i32,
    height: i32,
    rotation: i32,
    fps: f64,
    header_frames: i64,
    packets: i64,
    duration_s: f64,
    codec: [c_char; 32],
    container: [c_char; 64],
    demux_problem: [c_char; 64],
}

/// `vk_stats` of vk_decode.h: how a decode went (for tests and measurements).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DecodeStats {
    pub seeks: i32,
    pub restarts: i32,
    pub pts_mode: i32,
    pub frames_decoded: i64,
}

extern "C" {
    fn vk_probe(path: *const c_char, out: *mut VkInfo, err: *mut c_char, errlen: usize) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn vk_decode(
        path: *const c_char,
        indices: *const i64,
        n: c_int,
        out_w: c_int,
        out_h: c_int,
        resize: c_int,
        out_rgb: *mut u8,
        stats: *mut DecodeStats,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn vk_decode_each(
        path: *const c_char,
        indices: *const i64,
        n: c_int,
        out_w: c_int,
        out_h: c_int,
        resize: c_int,
        cb: extern "C" fn(*mut c_void, c_int, *const u8) -> c_int,
        user: *mut c_void,
        skip: c_int,
        stats: *mut DecodeStats,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// The path as libav's URL: `file:` keeps a name with a colon from reading as a protocol.
fn c_path(path: &Path) -> Result<CString> {
    if super::is_url(path) {
        return CString::new(path.as_os_str().as_bytes())
            .map_err(|_| anyhow!("{}: URL contains a NUL byte", path.display()));
    }
    let mut url = b"file:".to_vec();
    url.extend_from_slice(path.as_os_str().as_bytes());
    CString::new(url).map_err(|_| anyhow!("{}: path contains a NUL byte", path.display()))
}

fn c_text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `probe` without a process: the same fields, counts and truncation checks as
/// `probe_with_ffprobe` (an MP4/MOV sample table is trusted as `probe`'s native reader trusts
/// it, when every sample lies inside the file; other containers have their packets counted).
pub fn probe_libav(path: &Path) -> Result<VideoInfo> {
    super::probe::check_file(path)?;
    let url = c_path(path)?;
    // SAFETY: VkInfo is plain data; all-zero is a valid value.
    let mut raw: VkInfo = unsafe { std::mem::zeroed() };
    let mut err = [0 as c_char; 512];
    // SAFETY: valid NUL-terminated path, out-pointer and buffer of the stated length.
    let rc = unsafe { vk_probe(url.as_ptr(), &mut raw, err.as_mut_ptr(), err.len()) };
    match rc {
        0 => {}
        VK_ERR_NO_VIDEO => bail!("{}: no video stream (not a video file?)", path.display()),
        VK_ERR_OPEN => {
            bail!("{}: not a readable video: {}", path.display(), stderr_reason(c_text(&err).as_bytes()))
        }
        _ => bail!("{}: cannot probe: {}", path.display(), stderr_reason(c_text(&err).as_bytes())),
    }
    if raw.width <= 0 || raw.height <= 0 {
        bail!("{}: video stream has no frame size (corrupt header?)", path.display());
    }
    let container = c_text(&raw.container);
    let problem = c_text(&raw.demux_problem);
    if !problem.is_empty() {
        bail!("{}: truncated video: the demuxer reports {problem:?}", path.display());
    }
    let packets = (raw.packets >= 0).then_some(raw.packets as usize);
    let header_frames = (raw.header_frames > 0).then_some(raw.header_frames as usize);
    let num_frames = super::probe::checked_frame_count(path, &container, packets, header_frames)?;
    let fps = raw.fps;
    let (fps, duration_s) =
        super::probe::rate_and_duration(fps, (raw.duration_s >= 0.0).then_some(raw.duration_s), num_frames);
    Ok(VideoInfo {
        path: path.to_path_buf(),
        codec: c_text(&raw.codec),
        container,
        width: raw.width as u32,
        height: raw.height as u32,
        rotation: raw.rotation,
        fps,
        num_frames,
        duration_s,
    })
}

/// `decode_frames` without a process: the frames at `indices` (any order, duplicates allowed),
/// scaled to `size` (W, H) as `scale=W:H:flags=bilinear` does, or at the displayed size. Where
/// the CLI would do something the shim does not reproduce (a rotation by other than a right
/// angle, rotated frames in a format the CLI converts first, a frame size that changes
/// mid-stream) this decodes through the CLI instead, so the answer is always the CLI's.
pub fn decode_frames_libav(
    info: &VideoInfo,
    indices: &[usize],
    size: Option<(u32, u32)>,
) -> Result<DecodedFrames> {
    decode_with_stats(info, indices, size).map(|(frames, _)| frames)
}

/// How an in-process decode went (read by the tests and the timing).
#[derive(Clone, Debug, Default)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Run {
    pub stats: DecodeStats,
    /// Why the CLI path decoded instead, if it did.
    pub cli_fallback: Option<String>,
}

/// A decode request in the shim's terms.
struct Request {
    wanted: Vec<usize>,
    idx: Vec<i64>,
    /// Output width and height.
    w: u32,
    h: u32,
    url: CString,
}

impl Request {
    fn new(info: &VideoInfo, indices: &[usize], size: Option<(u32, u32)>) -> Result<Self> {
        let wanted = super::decode::wanted_frames(info, indices)?;
        let (w, h) = size.unwrap_or((info.width, info.height));
        c_int::try_from(w)?;
        c_int::try_from(h)?;
        c_int::try_from(wanted.len())?;
        let idx = wanted.iter().map(|&i| i as i64).collect();
        Ok(Self { wanted, idx, w, h, url: c_path(&info.path)? })
    }

    /// What a return code other than VK_ERR_UNSUPPORTED means: Ok when every wanted frame was
    /// reached, else the CLI path's messages. `reached` counts frames delivered before a
    /// failure that returned no count.
    fn outcome(&self, info: &VideoInfo, rc: c_int, msg: &str, reached: usize) -> Result<()> {
        let path = &info.path;
        if let Some(detail) = msg.strip_prefix("corrupt video: ") {
            let detail = detail.replace('\n', " ");
            bail!("{}: corrupt video: {detail}", path.display());
        }
        // Where the file cannot be opened or decoded at all, the CLI path reports what it
        // decoded (nothing, for the batch decode).
        let got = match rc {
            VK_ERR_OPEN | VK_ERR_NO_VIDEO | VK_ERR_DECODE => reached,
            rc if rc < 0 => {
                bail!("{}: in-process decoding failed: {}", path.display(), stderr_reason(msg.as_bytes()))
            }
            rc => rc as usize,
        };
        if got < self.wanted.len() {
            let why =
                if msg.is_empty() { "stream ends early".to_string() } else { stderr_reason(msg.as_bytes()) };
            return Err(super::decode::short_decode(info, got, &self.wanted, &why));
        }
        Ok(())
    }
}

pub(crate) fn decode_with_stats(
    info: &VideoInfo,
    indices: &[usize],
    size: Option<(u32, u32)>,
) -> Result<(DecodedFrames, Run)> {
    let req = Request::new(info, indices, size)?;
    let frame_bytes = req.w as usize * req.h as usize * 3;
    let mut data = vec![0u8; frame_bytes * req.wanted.len()];
    let mut stats = DecodeStats::default();
    let mut err = [0 as c_char; 1024];
    // SAFETY: `idx` holds n values, `data` n frames of h rows of w * 3 bytes, `err` err.len().
    let rc = unsafe {
        vk_decode(
            req.url.as_ptr(),
            req.idx.as_ptr(),
            req.idx.len() as c_int,
            req.w as c_int,
            req.h as c_int,
            c_int::from(size.is_some()),
            data.as_mut_ptr(),
            &mut stats,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    let msg = c_text(&err);
    if rc == VK_ERR_UNSUPPORTED {
        return Ok((decode_frames(info, indices, size)?, Run { stats, cli_fallback: Some(msg) }));
    }
    req.outcome(info, rc, &msg, 0)?;
    let frames = Array4::from_shape_vec((req.wanted.len(), req.h as usize, req.w as usize, 3), data)?;
    Ok((DecodedFrames { indices: req.wanted, frames }, Run { stats, cli_fallback: None }))
}

/// What the C callback reaches: the caller's sink, the frame numbers, and the first error.
struct EachState<'s, 'f> {
    sink: &'s mut FrameSink<'f>,
    wanted: &'s [usize],
    shape: (usize, usize),
    delivered: usize,
    error: Option<anyhow::Error>,
}

extern "C" fn each_frame(user: *mut c_void, j: c_int, rgb: *const u8) -> c_int {
    // SAFETY: `user` is the EachState that decode_each_libav passed, alive for the whole call.
    let state = unsafe { &mut *(user as *mut EachState) };
    let (h, w) = state.shape;
    // SAFETY: vk_decode_each hands over h rows of w * 3 bytes, valid until we return.
    let bytes = unsafe { std::slice::from_raw_parts(rgb, h * w * 3) };
    let Some(&index) = usize::try_from(j).ok().and_then(|j| state.wanted.get(j)) else {
        state.error = Some(anyhow!("decoder delivered frame position {j} outside the request"));
        return 1;
    };
    let frame = ArrayView3::from_shape((h, w, 3), bytes).expect("frame buffer of the stated size");
    // A panic must not unwind into C.
    let sink = &mut *state.sink;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(index, frame))) {
        Ok(Ok(())) => {
            state.delivered = j as usize + 1;
            0
        }
        Ok(Err(e)) => {
            state.error = Some(e);
            1
        }
        Err(_) => {
            state.error = Some(anyhow!("a frame consumer panicked"));
            1
        }
    }
}

/// `decode_frames_libav`, one frame at a time: the distinct frames of `indices`, in ascending
/// order, each handed to `sink` as (frame number, [H, W, 3] RGB) as soon as it is decoded, so
/// memory does not grow with the number of frames. The frames are those `decode_frames_libav`
/// returns, byte for byte; where the in-process path hands a file to the CLI, the CLI decodes
/// the frames not yet delivered. An error from `sink` stops decoding and is returned.
pub fn decode_each_libav(
    info: &VideoInfo,
    indices: &[usize],
    size: Option<(u32, u32)>,
    sink: &mut FrameSink,
) -> Result<()> {
    let req = Request::new(info, indices, size)?;
    let mut stats = DecodeStats::default();
    let mut err = [0 as c_char; 1024];
    let mut state = EachState {
        sink,
        wanted: &req.wanted,
        shape: (req.h as usize, req.w as usize),
        delivered: 0,
        error: None,
    };
    // SAFETY: `idx` holds n values, `err` err.len(); `state` outlives the call and is only
    // touched by `each_frame` during it.
    let rc = unsafe {
        vk_decode_each(
            req.url.as_ptr(),
            req.idx.as_ptr(),
            req.idx.len() as c_int,
            req.w as c_int,
            req.h as c_int,
            c_int::from(size.is_some()),
            each_frame,
            &mut state as *mut EachState as *mut c_void,
            0,
            &mut stats,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    let EachState { sink, delivered, error, .. } = state;
    if let Some(e) = error {
        return Err(e);
    }
    let msg = c_text(&err);
    if rc == VK_ERR_UNSUPPORTED {
        // The CLI decodes what is left; what was delivered stays delivered.
        let rest = &req.wanted[delivered..];
        return if rest.is_empty() { Ok(()) } else { decode_each_cli(info, rest, size, sink) };
    }
    if rc == VK_ERR_STOPPED {
        bail!("{}: decoding stopped", info.path.display());
    }
    req.outcome(info, rc, &msg, delivered)
}

#[cfg(test)]
#[path = "libav_tests.rs"]
mod tests;
