//! Reading an MP4/MOV header natively, so the common case needs no `ffprobe` process (one
//! process start costs ~0.1 s here, as long as decoding a small clip). Only what sampling needs:
//! the first video track's sample count, duration, size, codec and rotation. Anything unusual
//! (fragmented files, several edits, no moov) returns `None` and the caller asks ffprobe.

use super::VideoInfo;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Iterates the child boxes of `data` as (type, body).
fn boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let Some(size32) = be_u32(data, pos) else { break };
        let kind: [u8; 4] = data[pos + 4..pos + 8].try_into().unwrap_or([0; 4]);
        let (header, size) = match size32 {
            1 => match be_u64(data, pos + 8) {
                Some(s) => (16, s as usize),
                None => break,
            },
            0 => (8, data.len() - pos),
            s => (8, s as usize),
        };
        if size < header || pos + size > data.len() {
            break;
        }
        out.push((kind, &data[pos + header..pos + size]));
        pos += size;
    }
    out
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).into_iter().find(|(k, _)| k == kind).map(|(_, b)| b)
}

/// Top-level boxes: their types and where `moov` is. `None` when a box runs past the end of
/// the file (a cut file: let ffprobe name the problem).
fn read_moov(file: &mut File, len: u64) -> Option<Vec<u8>> {
    let mut pos = 0u64;
    let mut moov = None;
    while pos < len {
        file.seek(SeekFrom::Start(pos)).ok()?;
        let mut h = [0u8; 16];
        let want = (len - pos).min(16) as usize;
        file.read_exact(&mut h[..want]).ok()?;
        let size32 = be_u32(&h, 0)? as u64;
        let (hdr, size) = match size32 {
            1 => (16, be_u64(&h, 8)?),
            0 => (8, len - pos),
            s => (8, s),
        };
        if size < hdr || pos + size > len {
            return None;
        }
        match &h[4..8] {
            b"moov" => {
                let mut body = vec![0u8; (size - hdr) as usize];
                file.seek(SeekFrom::Start(pos + hdr)).ok()?;
                file.read_exact(&mut body).ok()?;
                moov = Some(body);
            }
            b"moof" => return None, // fragmented: sample counts live in fragments
            _ => {}
        }
        pos += size;
    }
    moov
}

fn codec_name(fourcc: &[u8]) -> String {
    match fourcc {
        b"avc1" | b"avc3" => "h264".into(),
        b"hvc1" | b"hev1" => "hevc".into(),
        b"mp4v" => "mpeg4".into(),
        b"vp09" => "vp9".into(),
        b"av01" => "av1".into(),
        other => String::from_utf8_lossy(other).trim().to_string(),
    }
}

/// Rotation in ffprobe's convention (its `rotation` side data) from a tkhd matrix (a b u / c d v / x y w, 16.16 fixed point), the angle
/// ffmpeg's autorotate undoes.
fn rotation(tkhd_matrix: &[u8]) -> Option<i32> {
    let a = be_u32(tkhd_matrix, 0)? as i32;
    let b = be_u32(tkhd_matrix, 4)? as i32;
    let deg = (-(b as f64)).atan2(a as f64).to_degrees().round() as i32;
    Some(deg.rem_euclid(360))
}

pub fn probe_mp4(path: &Path) -> Option<VideoInfo> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic).ok()?;
    if !matches!(&magic[4..8], b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide") {
        return None;
    }
    let moov = read_moov(&mut file, len)?;
    for (kind, trak) in boxes(&moov) {
        if &kind != b"trak" {
            continue;
        }
        let mdia = child(trak, b"mdia")?;
        let hdlr = child(mdia, b"hdlr")?;
        if hdlr.get(8..12)? != b"vide" {
            continue;
        }
        if let Some(elst) = child(trak, b"edts").and_then(|e| child(e, b"elst")) {
            if be_u32(elst, 4)? > 1 {
                return None; // several edits can drop or repeat frames: let ffprobe count
            }
        }
        let tkhd = child(trak, b"tkhd")?;
        let matrix_at = if tkhd[0] == 1 { 52 } else { 40 };
        let rot = rotation(tkhd.get(matrix_at..matrix_at + 36)?)?;
        let mdhd = child(mdia, b"mdhd")?;
        let (timescale, duration) = if mdhd[0] == 1 {
            (be_u32(mdhd, 20)?, be_u64(mdhd, 24)?)
        } else {
            (be_u32(mdhd, 12)?, be_u32(mdhd, 16)? as u64)
        };
        let stbl = child(child(mdia, b"minf")?, b"stbl")?;
        let num_frames = match child(stbl, b"stsz") {
            Some(stsz) => be_u32(stsz, 8)? as usize,
            None => be_u32(child(stbl, b"stz2")?, 8)? as usize,
        };
        let stsd = child(stbl, b"stsd")?;
        // stsd: version/flags, entry count, then the first sample entry (size, fourcc, body).
        let entry = stsd.get(8..)?;
        let fourcc = entry.get(4..8)?;
        let (cw, ch) = (
            u16::from_be_bytes(entry.get(32..34)?.try_into().ok()?),
            u16::from_be_bytes(entry.get(34..36)?.try_into().ok()?),
        );
        if num_frames == 0 || timescale == 0 || cw == 0 || ch == 0 || rot % 90 != 0 {
            return None;
        }
        let duration_s = duration as f64 / timescale as f64;
        let fps = if duration_s > 0.0 { num_frames as f64 / duration_s } else { 0.0 };
        let (width, height) =
            if rot == 90 || rot == 270 { (ch as u32, cw as u32) } else { (cw as u32, ch as u32) };
        return Some(VideoInfo {
            path: path.to_path_buf(),
            codec: codec_name(fourcc),
            container: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            width,
            height,
            rotation: rot,
            fps,
            num_frames,
            duration_s,
        });
    }
    None
}
