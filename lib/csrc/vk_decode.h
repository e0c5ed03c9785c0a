/*
 * vidkit's in-process decoder: a small C shim over the system FFmpeg 5.1 libraries
 * (libavformat, libavcodec, libswscale, libavutil) that reproduces what the ffmpeg CLI path
 * (lib/src/video/decode.rs) outputs, byte for byte, without starting a process.
 *
 * Handle-free: every call opens, works and closes. Thread-safe: calls share no state except a
 * log callback installed once, which routes libav messages to the calling thread only.
 */
#ifndef VK_DECODE_H
#define VK_DECODE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes below zero. vk_decode returns the number of wanted frames it delivered (>= 0)
 * otherwise; fewer than asked means the stream ended early or broke (err says why). */
#define VK_ERR_OPEN (-1)        /* not a readable video; err holds libav's last message */
#define VK_ERR_NO_VIDEO (-2)    /* no video stream */
#define VK_ERR_UNSUPPORTED (-3) /* the CLI would do something this shim does not reproduce
                                   (odd rotation, size change mid-stream): use the CLI path */
#define VK_ERR_DECODE (-4)      /* no decoder, allocation failure, other hard error */
#define VK_ERR_ARGS (-5)        /* indices not sorted/unique/non-negative, bad size */
#define VK_ERR_STOPPED (-6)     /* vk_decode_each: the callback asked to stop */

typedef struct vk_info {
    int32_t width, height; /* displayed size, after the rotation ffmpeg's autorotate applies */
    int32_t rotation;      /* degrees in [0, 360), ffprobe's convention (display matrix angle) */
    double fps;            /* avg_frame_rate, else r_frame_rate, else 0 */
    int64_t header_frames; /* the container's frame count, 0 when unknown */
    int64_t packets;       /* video packets counted by demuxing; -1 when not counted (an
                              MP4/MOV sample table whose samples all lie inside the file) */
    double duration_s;     /* stream duration, else container duration, else -1 */
    char codec[32];        /* ffprobe's codec_name */
    char container[64];    /* ffprobe's format_name */
    char demux_problem[64]; /* a demuxer message that means a cut file, "" if none */
} vk_info;

typedef struct vk_stats {
    int32_t seeks;          /* seeks to a keyframe that were used */
    int32_t restarts;       /* times the pts bookkeeping disagreed and decoding restarted
                               sequentially */
    int32_t pts_mode;       /* 1 when frames were identified by pts (seeking allowed) */
    int64_t frames_decoded; /* frames the decoder output, wanted or not */
} vk_stats;

/* Probes the first video stream of `path`. 0 on success, VK_ERR_* otherwise. */
int vk_probe(const char *path, vk_info *out, char *err, size_t errlen);

/*
 * Decodes the frames numbered `indices` (sorted, unique, >= 0; numbered from 0 in the order the
 * decoder outputs them, exactly as the CLI's `select` filter counts `n`) of the first video
 * stream into `out_rgb`: n frames of out_h rows of out_w * 3 bytes (rgb24).
 * resize == 0: frames keep their displayed size, which must be out_w x out_h; converted as the
 *              CLI's automatic format conversion does (swscale, flags=bicubic).
 * resize != 0: scaled to out_w x out_h as `scale=W:H:flags=bilinear` does.
 * Autorotation as the CLI applies it (transpose / hflip / vflip before conversion).
 * `stats` may be NULL.
 */
int vk_decode(const char *path, const int64_t *indices, int n, int out_w, int out_h, int resize,
              uint8_t *out_rgb, vk_stats *stats, char *err, size_t errlen);

/*
 * vk_decode, one frame at a time: each wanted frame j (0-based position in `indices`), in
 * order, is converted into a buffer of out_h rows of out_w * 3 bytes that lives until the
 * callback returns, and handed to `cb(user, j, rgb)`; a non-zero return stops decoding
 * (VK_ERR_STOPPED). Memory does not grow with the number of frames. The first `skip` wanted
 * frames are decoded past but not delivered (a caller resuming after a fallback). Returns as
 * vk_decode: the number of wanted frames reached (delivered or skipped), or VK_ERR_*; concealed
 * damage is reported after the frames were delivered.
 */
typedef int (*vk_frame_cb)(void *user, int j, const uint8_t *rgb);
int vk_decode_each(const char *path, const int64_t *indices, int n, int out_w, int out_h,
                   int resize, vk_frame_cb cb, void *user, int skip, vk_stats *stats, char *err,
                   size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
