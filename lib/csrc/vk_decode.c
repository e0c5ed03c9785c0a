/*
 * In-process decoding that reproduces the ffmpeg 5.1 CLI path of lib/src/video/decode.rs:
 *
 *   ffmpeg -i F -map 0:v:0 -vf select=...[,scale=W:H:flags=bilinear] -fps_mode passthrough
 *          -f rawvideo -pix_fmt rgb24 -
 *
 * What the CLI does, and what this file mirrors (fftools/ffmpeg_filter.c, libavfilter/vf_scale.c,
 * vf_transpose.c, vf_hflip.c, vf_vflip.c, avfiltergraph.c of FFmpeg 5.1):
 *  - decoder: avcodec_find_decoder, threads=auto, pkt_timebase; zero-size packets are skipped;
 *    decode errors are logged and decoding goes on; a demuxing error ends the input.
 *  - autorotation: transpose (90/270), hflip and/or vflip (180, flipped matrices), inserted
 *    right after the buffer source; `select` numbers every frame the decoder outputs.
 *  - conversion: the format negotiation puts exactly one swscale conversion after the rotation:
 *    the user's scale (flags=bilinear) when a size is given, else the auto-inserted scale whose
 *    options come from the CLI's default sws_flags=bicubic. vf_scale's context options
 *    (MPEG-2 chroma siting for yuv420p input, slice threads) and its per-frame
 *    sws_setColorspaceDetails (in_color_matrix=auto, frame colour range) are repeated here.
 *
 * Seeking and skipping: a packet index (pts of every video packet; built only where it can
 * pay) gives each frame's number as its pts rank. With it, decoding seeks to the keyframe
 * before a wanted frame when that skips decoding, and sends unwanted frames with
 * AVDISCARD_NONREF (for codecs and containers where a skipped non-reference picture is exactly
 * one missing frame and changes no other). Every frame output is checked against the index:
 * the first one since the start or a seek must be the expected frame (the keyframe), then ranks
 * must follow one another, leaving out only frames sent to be skipped. Any disagreement, and
 * any file without a clean index (missing or repeated pts, packets marked for discarding),
 * falls back to decoding sequentially and counting frames, which is exactly what `select` does.
 */
#include "vk_decode.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/cpu.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Seek only when it skips more than this many frames of decoding. */
#define SEEK_GAIN 4
/* Without a gap this long between wanted frames, seeking cannot pay. */
#define SCAN_MIN_GAP 8
/* Internal: the pts bookkeeping disagreed with the decoder; decode again sequentially. */
#define RESTART (-100)

/* ------------------------------------------------------------------------------------------ */
/* libav messages: routed to the calling thread's capture, never to stderr.                   */

typedef struct LogCapture {
    char last_error[512];
    char truncation[64];
    int decoder_errors;     /* error-level messages from the decoder itself */
    char decoder_error[512];
} LogCapture;

static _Thread_local LogCapture *tl_capture;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

/* The demuxer messages probe.rs treats as a cut file. */
static const char *const TRUNCATION_SIGNS[] = {"partial file", "ended prematurely",
                                               "moov atom not found"};

static void log_callback(void *avcl, int level, const char *fmt, va_list vl)
{
    LogCapture *cap = tl_capture;
    char line[512];
    int print_prefix = 1;
    size_t len;

    /* The CLI path runs with -loglevel error; nothing less severe is ever shown. */
    if (!cap || level > AV_LOG_ERROR)
        return;
    av_log_format_line2(avcl, level, fmt, vl, line, sizeof line, &print_prefix);
    len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
        line[--len] = 0;
    if (!len)
        return;
    snprintf(cap->last_error, sizeof cap->last_error, "%s", line);
    if (avcl && *(const AVClass **)avcl == avcodec_get_class()) {
        if (!cap->decoder_errors++)
            snprintf(cap->decoder_error, sizeof cap->decoder_error, "%s", line);
    }
    for (size_t i = 0; i < sizeof TRUNCATION_SIGNS / sizeof *TRUNCATION_SIGNS; i++)
        if (strstr(line, TRUNCATION_SIGNS[i]))
            snprintf(cap->truncation, sizeof cap->truncation, "%s", TRUNCATION_SIGNS[i]);
}

static void install_log(void)
{
    av_log_set_callback(log_callback);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* What the CLI's stderr ends with: libav's last logged error, then the text of `averr` (the
 * line ffmpeg's print_error adds), one per line. */
static void set_reason(char *err, size_t errlen, const LogCapture *cap, int averr)
{
    char buf[128];
    av_strerror(averr, buf, sizeof buf);
    if (cap->last_error[0])
        set_err(err, errlen, "%s\n%s", cap->last_error, buf);
    else
        set_err(err, errlen, "%s", buf);
}

/* ------------------------------------------------------------------------------------------ */
/* Opening: like the CLI's open_input_file + `-map 0:v:0`.                                    */

typedef struct Input {
    AVFormatContext *fmt;
    AVStream *st;
    int si;
} Input;

static void close_input(Input *in)
{
    if (in->fmt)
        avformat_close_input(&in->fmt);
    in->st = NULL;
    in->si = -1;
}

static int open_input(Input *in, const char *path, const LogCapture *cap, char *err, size_t errlen)
{
    AVDictionary *opts = NULL;
    int ret;

    in->fmt = NULL;
    in->st = NULL;
    in->si = -1;
    av_dict_set(&opts, "scan_all_pmts", "1", 0); /* as ffmpeg and ffprobe do */
    ret = avformat_open_input(&in->fmt, path, NULL, &opts);
    av_dict_free(&opts);
    if (ret < 0) {
        set_reason(err, errlen, cap, ret);
        return VK_ERR_OPEN;
    }
    ret = avformat_find_stream_info(in->fmt, NULL);
    if (ret < 0) {
        set_reason(err, errlen, cap, ret);
        close_input(in);
        return VK_ERR_OPEN;
    }
    for (unsigned i = 0; i < in->fmt->nb_streams; i++) {
        if (in->fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) {
            in->si = (int)i;
            break;
        }
    }
    if (in->si < 0) {
        set_err(err, errlen, "no video stream");
        close_input(in);
        return VK_ERR_NO_VIDEO;
    }
    in->st = in->fmt->streams[in->si];
    for (unsigned i = 0; i < in->fmt->nb_streams; i++)
        if ((int)i != in->si)
            in->fmt->streams[i]->discard = AVDISCARD_ALL;
    return 0;
}

static int is_mov(const Input *in)
{
    return strcmp(in->fmt->iformat->name, "mov,mp4,m4a,3gp,3g2,mj2") == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Probe                                                                                      */

/* ffprobe prints the display matrix angle as an integer (truncated), else the rotate tag. */
static int32_t probe_rotation(AVStream *st)
{
    const uint8_t *sd = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, NULL);
    const AVDictionaryEntry *tag;
    double deg = 0;
    int64_t r;

    if (sd) {
        double a = av_display_rotation_get((const int32_t *)sd);
        if (!isnan(a))
            deg = (double)(int64_t)a;
    } else if ((tag = av_dict_get(st->metadata, "rotate", NULL, 0))) {
        deg = strtod(tag->value, NULL);
    }
    r = (int64_t)llround(deg) % 360;
    return (int32_t)(r < 0 ? r + 360 : r);
}

/* An MP4/MOV sample table is an exact frame count (as lib/src/video/mp4.rs trusts it) when
 * every sample lies inside the file. */
static int mov_count_trusted(Input *in)
{
    int64_t n = in->st->nb_frames, size;
    int entries;

    if (!is_mov(in) || n <= 0)
        return 0;
    entries = avformat_index_get_entries_count(in->st);
    if (entries != n)
        return 0;
    size = avio_size(in->fmt->pb);
    if (size <= 0)
        return 0;
    for (int i = 0; i < entries; i++) {
        const AVIndexEntry *e = avformat_index_get_entry(in->st, i);
        if (!e || e->pos < 0 || e->pos + e->size > size)
            return 0;
    }
    return 1;
}

int vk_probe(const char *path, vk_info *out, char *err, size_t errlen)
{
    LogCapture cap;
    LogCapture *prev = tl_capture;
    Input in;
    AVCodecParameters *par;
    AVRational rate;
    int ret, swap;

    pthread_once(&log_once, install_log);
    memset(&cap, 0, sizeof cap);
    tl_capture = &cap;
    memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = 0;

    ret = open_input(&in, path, &cap, err, errlen);
    if (ret < 0)
        goto done;
    par = in.st->codecpar;
    snprintf(out->codec, sizeof out->codec, "%s", avcodec_get_name(par->codec_id));
    snprintf(out->container, sizeof out->container, "%s", in.fmt->iformat->name);
    out->rotation = probe_rotation(in.st);
    swap = out->rotation == 90 || out->rotation == 270;
    out->width = swap ? par->height : par->width;
    out->height = swap ? par->width : par->height;
    rate = in.st->avg_frame_rate;
    if (!(rate.num > 0 && rate.den > 0))
        rate = in.st->r_frame_rate;
    out->fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0;
    out->header_frames = in.st->nb_frames > 0 ? in.st->nb_frames : 0;
    if (in.st->duration != AV_NOPTS_VALUE)
        out->duration_s = in.st->duration * av_q2d(in.st->time_base);
    else if (in.fmt->duration != AV_NOPTS_VALUE)
        out->duration_s = in.fmt->duration / (double)AV_TIME_BASE;
    else
        out->duration_s = -1;

    if (mov_count_trusted(&in)) {
        out->packets = -1;
    } else {
        /* ffprobe -count_packets: demux only, stop at the first error. */
        AVPacket *pkt = av_packet_alloc();
        int64_t count = 0;
        if (!pkt) {
            set_err(err, errlen, "out of memory");
            ret = VK_ERR_DECODE;
            close_input(&in);
            goto done;
        }
        while (av_read_frame(in.fmt, pkt) >= 0) {
            if (pkt->stream_index == in.si)
                count++;
            av_packet_unref(pkt);
        }
        av_packet_free(&pkt);
        out->packets = count;
    }
    snprintf(out->demux_problem, sizeof out->demux_problem, "%s", cap.truncation);
    close_input(&in);
    ret = 0;
done:
    tl_capture = prev;
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Packet index: frame number = rank of the frame's pts among all video packets' pts.        */

typedef struct Index {
    int64_t *pts; /* sorted */
    int64_t n;
    int64_t *key_rank, *key_pts, *key_dts; /* keyframes by ascending rank */
    int64_t nkeys;
} Index;

static void free_index(Index *ix)
{
    free(ix->pts);
    free(ix->key_rank);
    free(ix->key_pts);
    free(ix->key_dts);
    memset(ix, 0, sizeof *ix);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t rank_of(const Index *ix, int64_t pts)
{
    int64_t lo = 0, hi = ix->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ix->pts[mid] < pts)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n && ix->pts[lo] == pts ? lo : -1;
}

/* The last keyframe at or before frame `frame`, as a position in the key arrays; -1 if none. */
static int64_t key_at_or_before(const Index *ix, int64_t frame)
{
    int64_t lo = 0, hi = ix->nkeys;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ix->key_rank[mid] <= frame)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - 1;
}

static int push(int64_t **a, int64_t *cap, int64_t n, int64_t v)
{
    if (n == *cap) {
        int64_t nc = *cap ? *cap * 2 : 1024;
        int64_t *p = realloc(*a, (size_t)nc * sizeof **a);
        if (!p)
            return -1;
        *a = p;
        *cap = nc;
    }
    (*a)[n] = v;
    return 0;
}

/* Reads every packet. 1: a usable index; 0: not usable (missing or repeated pts, packets the
 * demuxer marks for discarding, a read error); <0: out of memory. */
static int build_index(Input *in, Index *ix)
{
    AVPacket *pkt = av_packet_alloc();
    int64_t cap = 0, kcap = 0, kcap2 = 0, nk = 0;
    int64_t *kp = NULL, *kd = NULL;
    int usable = 1, ret;

    memset(ix, 0, sizeof *ix);
    if (!pkt)
        return -1;
    while ((ret = av_read_frame(in->fmt, pkt)) >= 0) {
        if (pkt->stream_index == in->si && pkt->size > 0) {
            if (pkt->pts == AV_NOPTS_VALUE || (pkt->flags & AV_PKT_FLAG_DISCARD)) {
                usable = 0;
                av_packet_unref(pkt);
                break;
            }
            if (push(&ix->pts, &cap, ix->n, pkt->pts) < 0)
                goto oom;
            ix->n++;
            if (pkt->flags & AV_PKT_FLAG_KEY) {
                if (push(&kp, &kcap, nk, pkt->pts) < 0 || push(&kd, &kcap2, nk, pkt->dts) < 0)
                    goto oom;
                nk++;
            }
        }
        av_packet_unref(pkt);
    }
    if (ret < 0 && ret != AVERROR_EOF)
        usable = 0;
    av_packet_free(&pkt);
    if (!usable || ix->n == 0 || nk == 0) {
        free(kp);
        free(kd);
        free_index(ix);
        return 0;
    }
    qsort(ix->pts, (size_t)ix->n, sizeof *ix->pts, cmp_i64);
    for (int64_t i = 1; i < ix->n; i++) {
        if (ix->pts[i] == ix->pts[i - 1]) {
            free(kp);
            free(kd);
            free_index(ix);
            return 0;
        }
    }
    /* Keyframes by rank: pair (rank, position in kp) and sort. */
    {
        int64_t *order = malloc((size_t)nk * 2 * sizeof *order);
        if (!order)
            goto oom_late;
        for (int64_t i = 0; i < nk; i++) {
            order[2 * i] = rank_of(ix, kp[i]);
            order[2 * i + 1] = i;
        }
        qsort(order, (size_t)nk, 2 * sizeof *order, cmp_i64);
        ix->key_rank = malloc((size_t)nk * sizeof *ix->key_rank);
        ix->key_pts = malloc((size_t)nk * sizeof *ix->key_pts);
        ix->key_dts = malloc((size_t)nk * sizeof *ix->key_dts);
        if (!ix->key_rank || !ix->key_pts || !ix->key_dts) {
            free(order);
            goto oom_late;
        }
        for (int64_t i = 0; i < nk; i++) {
            ix->key_rank[i] = order[2 * i];
            ix->key_pts[i] = kp[order[2 * i + 1]];
            ix->key_dts[i] = kd[order[2 * i + 1]];
        }
        ix->nkeys = nk;
        free(order);
    }
    free(kp);
    free(kd);
    return 1;
oom:
    av_packet_unref(pkt);
    av_packet_free(&pkt);
oom_late:
    free(kp);
    free(kd);
    free_index(ix);
    return -1;
}

static int nonref_skipping_safe(const Input *in);

/* Whether reading the whole file for an index can pay: either many unwanted frames could skip
 * decoding (non-reference ones), or some wanted frame lies far past the previous one and, where
 * the container already lists its keyframes in decode order (MP4/MOV, AVI), one of them falls
 * inside such a gap. */
static int worth_indexing(Input *in, const int64_t *want, int n)
{
    int64_t cur = 0;
    int far = 0, entries;

    if (nonref_skipping_safe(in) && want[n - 1] + 1 - n >= 2 * SCAN_MIN_GAP)
        return 1;

    for (int j = 0; j < n; j++) {
        if (want[j] - cur > SCAN_MIN_GAP)
            far = 1;
        cur = want[j] + 1;
    }
    if (!far)
        return 0;
    entries = avformat_index_get_entries_count(in->st);
    if (entries > 0 && (is_mov(in) || strcmp(in->fmt->iformat->name, "avi") == 0)) {
        /* Entry i is packet i in decode order; a keyframe's rank is at least its position. */
        int j = 0;
        cur = 0;
        for (int i = 0; i < entries && j < n; i++) {
            const AVIndexEntry *e = avformat_index_get_entry(in->st, i);
            if (!e || !(e->flags & AVINDEX_KEYFRAME))
                continue;
            while (j < n && want[j] < i) {
                cur = want[j] + 1;
                j++;
            }
            if (j < n && i > cur + SEEK_GAIN)
                return 1;
        }
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding state                                                                             */

typedef struct Dec {
    Input in;
    AVCodecContext *dec;
    AVPacket *pkt;
    int has_pending; /* pkt holds a packet read while seeking, not sent yet */
    int draining;    /* end of input: the decoder has been sent its flush packet */
    const LogCapture *cap;
    char decode_error[768];

    /* geometry, fixed by the first decoded frame as the CLI's filter graph is */
    int geom_set, src_w, src_h, src_fmt;
    int transpose_dir; /* -1: none; else vf_transpose's dir (bit 0: flip source rows,
                          bit 1: flip destination rows) */
    int hflip, vflip;
    AVFrame *rot;     /* transposed or mirrored copy */
    AVFrame *flipped; /* vflip: a view with negative line sizes */
    struct SwsContext *sws;
    AVFrame *rgb;
    int out_w, out_h, resize;

    /* pts mode: unwanted non-reference frames go to the decoder with AVDISCARD_NONREF */
    const Index *ix;
    const int64_t *want;
    int nwant;
    uint8_t *skip_sent; /* per rank: its packet was sent with NONREF; NULL: never skip */
    int skip_armed;     /* the first frame since the start or the last seek checked out */
} Dec;

static void close_decoder(Dec *d)
{
    avcodec_free_context(&d->dec);
    close_input(&d->in);
    d->has_pending = 0;
    d->draining = 0;
    if (d->pkt)
        av_packet_unref(d->pkt);
}

static void free_dec(Dec *d)
{
    close_decoder(d);
    free(d->skip_sent);
    d->skip_sent = NULL;
    av_packet_free(&d->pkt);
    av_frame_free(&d->rot);
    av_frame_free(&d->flipped);
    av_frame_free(&d->rgb);
    sws_freeContext(d->sws);
    d->sws = NULL;
}

static int open_decoder(Dec *d, const char *path, char *err, size_t errlen)
{
    const AVCodec *codec;
    AVDictionary *opts = NULL;
    int ret = open_input(&d->in, path, d->cap, err, errlen);

    if (ret < 0)
        return ret;
    codec = avcodec_find_decoder(d->in.st->codecpar->codec_id);
    if (!codec) {
        set_err(err, errlen, "no decoder for codec %s",
                avcodec_get_name(d->in.st->codecpar->codec_id));
        return VK_ERR_DECODE;
    }
    d->dec = avcodec_alloc_context3(codec);
    if (!d->dec || avcodec_parameters_to_context(d->dec, d->in.st->codecpar) < 0) {
        set_err(err, errlen, "cannot set up the %s decoder", codec->name);
        return VK_ERR_DECODE;
    }
    d->dec->pkt_timebase = d->in.st->time_base;
    d->dec->framerate = d->in.st->avg_frame_rate;
    d->dec->thread_count = 0; /* auto, as the CLI's threads=auto */
    /* The CLI path passes `-flags unaligned`: crop to the exact picture, never widened for
     * alignment (a Theora file otherwise decodes 218 wide, 4 black columns, for 214). */
    d->dec->flags |= AV_CODEC_FLAG_UNALIGNED;
    d->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    av_dict_set(&opts, "threads", "auto", 0);
    ret = avcodec_open2(d->dec, codec, &opts);
    av_dict_free(&opts);
    if (ret < 0) {
        set_reason(err, errlen, d->cap, ret);
        return VK_ERR_DECODE;
    }
    d->has_pending = 0;
    d->draining = 0;
    return 0;
}

static void note_error(Dec *d, int averr)
{
    set_reason(d->decode_error, sizeof d->decode_error, d->cap, averr);
}

static int is_wanted(const int64_t *want, int n, int64_t frame)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (want[mid] < frame)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && want[lo] == frame;
}

/* Whether skipping non-reference frames leaves every other frame as it was and takes exactly
 * the skipped frames out of the output: codecs whose non-reference pictures are whole frames,
 * in containers whose packets are whole frames (in MPEG-TS/PS a field can be a packet; AVI and
 * old Matroska remuxes carry MPEG-4 part 2 as packed B-frames with placeholder packets). */
static int nonref_skipping_safe(const Input *in)
{
    int mkv = strncmp(in->fmt->iformat->name, "matroska", 8) == 0;
    enum AVFieldOrder fo = in->st->codecpar->field_order;
    if (fo != AV_FIELD_UNKNOWN && fo != AV_FIELD_PROGRESSIVE)
        return 0; /* fields may come one to a packet */
    switch (in->st->codecpar->codec_id) {
    case AV_CODEC_ID_H264:
    case AV_CODEC_ID_HEVC:
    case AV_CODEC_ID_MPEG1VIDEO:
    case AV_CODEC_ID_MPEG2VIDEO:
        return is_mov(in) || mkv;
    case AV_CODEC_ID_MPEG4:
        return is_mov(in);
    default:
        return 0;
    }
}

/* The next frame the decoder outputs. 0: a frame; 1: end of stream. Like the CLI: a decoding
 * error is noted and decoding goes on with the next packet; a demuxing error ends the input. */
static int next_frame(Dec *d, AVFrame *f)
{
    for (;;) {
        int ret = avcodec_receive_frame(d->dec, f);
        if (ret >= 0)
            return 0;
        if (ret == AVERROR_EOF)
            return 1;
        if (ret != AVERROR(EAGAIN))
            note_error(d, ret);
        if (d->draining)
            return 1;
        if (!d->has_pending) {
            for (;;) {
                ret = av_read_frame(d->in.fmt, d->pkt);
                if (ret < 0)
                    break;
                if (d->pkt->stream_index == d->in.si && d->pkt->size > 0)
                    break;
                av_packet_unref(d->pkt);
            }
            if (ret < 0) {
                if (ret != AVERROR_EOF)
                    note_error(d, ret);
                avcodec_send_packet(d->dec, NULL);
                d->draining = 1;
                continue;
            }
        }
        d->has_pending = 0;
        if (d->skip_sent) {
            int64_t r = d->skip_armed && d->pkt->pts != AV_NOPTS_VALUE
                            ? rank_of(d->ix, d->pkt->pts)
                            : -1;
            int skip = r >= 0 && !is_wanted(d->want, d->nwant, r);
            if (skip)
                d->skip_sent[r] = 1;
            d->dec->skip_frame = skip ? AVDISCARD_NONREF : AVDISCARD_DEFAULT;
        }
        ret = avcodec_send_packet(d->dec, d->pkt);
        av_packet_unref(d->pkt);
        if (ret < 0 && ret != AVERROR(EAGAIN))
            note_error(d, ret);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Rotation and conversion                                                                    */

/* fftools/cmdutils.c get_rotation */
static double cli_rotation(const int32_t *m)
{
    double theta = 0;
    if (m)
        theta = -round(av_display_rotation_get(m));
    theta -= 360 * floor(theta / 360 + 0.9 / 360);
    return theta;
}

static int setup_geometry(Dec *d, const AVFrame *f, char *err, size_t errlen)
{
    const AVFrameSideData *sd = av_frame_get_side_data(f, AV_FRAME_DATA_DISPLAYMATRIX);
    const int32_t *m = sd && sd->size >= 9 * sizeof(int32_t) ? (const int32_t *)sd->data : NULL;
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(f->format);
    int w, h;
    double theta;

    if (!m)
        m = (const int32_t *)av_stream_get_side_data(d->in.st, AV_PKT_DATA_DISPLAYMATRIX, NULL);
    if (!desc) {
        set_err(err, errlen, "decoder output has no pixel format");
        return VK_ERR_DECODE;
    }
    theta = cli_rotation(m);
    d->transpose_dir = -1;
    d->hflip = d->vflip = 0;
    /* fftools/ffmpeg_filter.c configure_input_video_filter, autorotate */
    if (fabs(theta - 90) < 1.0) {
        d->transpose_dir = m[3] > 0 ? 0 /* cclock_flip */ : 1 /* clock */;
    } else if (fabs(theta - 180) < 1.0) {
        d->hflip = m[0] < 0;
        d->vflip = m[4] < 0;
    } else if (fabs(theta - 270) < 1.0) {
        d->transpose_dir = m[3] < 0 ? 3 /* clock_flip */ : 2 /* cclock */;
    } else if (fabs(theta) > 1.0) {
        set_err(err, errlen, "rotation by %.0f degrees (the CLI's rotate filter)", theta);
        return VK_ERR_UNSUPPORTED;
    } else if (fabs(theta) < 1.0) {
        if (m && m[4] < 0)
            d->vflip = 1;
    }
    if (d->transpose_dir >= 0 || d->hflip || d->vflip) {
        /* The formats vf_transpose / vf_hflip / vf_vflip take as they are; others would get an
         * extra conversion before the rotation in the CLI's graph. */
        int bad = desc->flags & (AV_PIX_FMT_FLAG_PAL | AV_PIX_FMT_FLAG_HWACCEL |
                                 AV_PIX_FMT_FLAG_BITSTREAM | AV_PIX_FMT_FLAG_BAYER);
        if (d->transpose_dir >= 0 && desc->log2_chroma_w != desc->log2_chroma_h)
            bad = 1;
        if (d->hflip && desc->log2_chroma_w != desc->log2_chroma_h &&
            desc->comp[0].plane == desc->comp[1].plane)
            bad = 1;
        if (bad) {
            set_err(err, errlen, "rotation of %s frames", desc->name);
            return VK_ERR_UNSUPPORTED;
        }
    }
    d->src_w = f->width;
    d->src_h = f->height;
    d->src_fmt = f->format;
    w = d->transpose_dir >= 0 ? f->height : f->width;
    h = d->transpose_dir >= 0 ? f->width : f->height;
    if (!d->resize && (w != d->out_w || h != d->out_h)) {
        set_err(err, errlen, "decoded frames are %dx%d, not the probed %dx%d", w, h, d->out_w,
                d->out_h);
        return VK_ERR_UNSUPPORTED;
    }
    if (d->transpose_dir >= 0 || d->hflip) {
        d->rot = av_frame_alloc();
        if (!d->rot)
            return VK_ERR_DECODE;
        d->rot->format = f->format;
        d->rot->width = w;
        d->rot->height = h;
        if (av_frame_get_buffer(d->rot, 0) < 0)
            return VK_ERR_DECODE;
    }
    if (d->vflip && !(d->flipped = av_frame_alloc()))
        return VK_ERR_DECODE;
    d->geom_set = 1;
    return 0;
}

/* vf_transpose filter_slice, one job */
static void transpose_frame(AVFrame *out, const AVFrame *in, int dir)
{
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(in->format);
    int steps[4];

    av_image_fill_max_pixsteps(steps, NULL, desc);
    for (int p = 0; p < 4 && out->data[p]; p++) {
        int hsub = p == 1 || p == 2 ? desc->log2_chroma_w : 0;
        int vsub = p == 1 || p == 2 ? desc->log2_chroma_h : 0;
        int step = steps[p];
        int inh = AV_CEIL_RSHIFT(in->height, vsub);
        int outw = AV_CEIL_RSHIFT(out->width, hsub);
        int outh = AV_CEIL_RSHIFT(out->height, vsub);
        ptrdiff_t dls = out->linesize[p], sls = in->linesize[p];
        uint8_t *dst = out->data[p];
        const uint8_t *src = in->data[p];

        if (dir & 1) {
            src += sls * (inh - 1);
            sls = -sls;
        }
        if (dir & 2) {
            dst += dls * (outh - 1);
            dls = -dls;
        }
        if (step == 1) {
            for (int y = 0; y < outh; y++, dst += dls)
                for (int x = 0; x < outw; x++)
                    dst[x] = src[x * sls + y];
        } else {
            for (int y = 0; y < outh; y++, dst += dls)
                for (int x = 0; x < outw; x++)
                    memcpy(dst + (ptrdiff_t)x * step, src + x * sls + (ptrdiff_t)y * step, step);
        }
    }
}

/* vf_hflip */
static void hflip_frame(AVFrame *out, const AVFrame *in)
{
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(in->format);
    int steps[4];

    av_image_fill_max_pixsteps(steps, NULL, desc);
    for (int p = 0; p < 4 && out->data[p]; p++) {
        int hsub = p == 1 || p == 2 ? desc->log2_chroma_w : 0;
        int vsub = p == 1 || p == 2 ? desc->log2_chroma_h : 0;
        int step = steps[p];
        int w = AV_CEIL_RSHIFT(in->width, hsub);
        int h = AV_CEIL_RSHIFT(in->height, vsub);
        for (int y = 0; y < h; y++) {
            const uint8_t *src = in->data[p] + (ptrdiff_t)y * in->linesize[p];
            uint8_t *dst = out->data[p] + (ptrdiff_t)y * out->linesize[p];
            for (int x = 0; x < w; x++)
                memcpy(dst + (ptrdiff_t)x * step, src + (ptrdiff_t)(w - 1 - x) * step, step);
        }
    }
}

/* The scale filter's swscale context (vf_scale.c config_props). */
static int make_sws(Dec *d, const AVFrame *src)
{
    int cpus = av_cpu_count();
    /* libavfilter's automatic thread count (avpriv_slicethread_create with 0 threads) */
    int threads = cpus > 1 ? cpus + 1 : 1;
    struct SwsContext *s = sws_alloc_context();

    if (!s)
        return VK_ERR_DECODE;
    av_opt_set_int(s, "srcw", src->width, 0);
    av_opt_set_int(s, "srch", src->height, 0);
    av_opt_set_int(s, "src_format", src->format, 0);
    av_opt_set_int(s, "dstw", d->out_w, 0);
    av_opt_set_int(s, "dsth", d->out_h, 0);
    av_opt_set_int(s, "dst_format", AV_PIX_FMT_RGB24, 0);
    /* `scale=W:H:flags=bilinear`, or the auto-inserted scaler with the CLI's sws_flags=bicubic */
    av_opt_set_int(s, "sws_flags", d->resize ? SWS_BILINEAR : SWS_BICUBIC, 0);
    av_opt_set_int(s, "param0", SWS_PARAM_DEFAULT, 0);
    av_opt_set_int(s, "param1", SWS_PARAM_DEFAULT, 0);
    av_opt_set_int(s, "threads", threads, 0);
    /* MPEG-2 chroma siting for yuv420p input, by vf_scale's convention */
    av_opt_set_int(s, "src_h_chr_pos", -513, 0);
    av_opt_set_int(s, "src_v_chr_pos", src->format == AV_PIX_FMT_YUV420P ? 128 : -513, 0);
    av_opt_set_int(s, "dst_h_chr_pos", -513, 0);
    av_opt_set_int(s, "dst_v_chr_pos", -513, 0);
    if (sws_init_context(s, NULL, NULL) < 0) {
        sws_freeContext(s);
        return VK_ERR_DECODE;
    }
    d->sws = s;
    d->rgb = av_frame_alloc();
    if (!d->rgb)
        return VK_ERR_DECODE;
    d->rgb->format = AV_PIX_FMT_RGB24;
    d->rgb->width = d->out_w;
    d->rgb->height = d->out_h;
    if (av_frame_get_buffer(d->rgb, 0) < 0)
        return VK_ERR_DECODE;
    return 0;
}

/* vf_scale.c scale_frame: in_color_matrix=auto follows the frame's colorspace, and a
 * specified colour range overrides the format's. */
static void frame_colorspace(struct SwsContext *sws, const AVFrame *in)
{
    int *inv_table, *table, in_full, out_full, brightness, contrast, saturation;
    const int *coefs;
    int cs = in->colorspace;

    sws_getColorspaceDetails(sws, &inv_table, &in_full, &table, &out_full, &brightness,
                             &contrast, &saturation);
    if (cs < 1 || cs > 10 || cs == 8)
        cs = AVCOL_SPC_BT470BG;
    coefs = sws_getCoefficients(cs);
    if (in->color_range != AVCOL_RANGE_UNSPECIFIED)
        in_full = in->color_range == AVCOL_RANGE_JPEG;
    sws_setColorspaceDetails(sws, coefs, in_full, coefs, out_full, brightness, contrast,
                             saturation);
}

static void copy_rows(uint8_t *dst, const uint8_t *src, ptrdiff_t linesize, int w, int h)
{
    for (int y = 0; y < h; y++)
        memcpy(dst + (size_t)y * w * 3, src + y * linesize, (size_t)w * 3);
}

static int convert(Dec *d, AVFrame *f, uint8_t *dst, char *err, size_t errlen)
{
    AVFrame *src = f;
    int ret;


    if (f->width != d->src_w || f->height != d->src_h || f->format != d->src_fmt) {
        /* The CLI rebuilds its filter graph here, and `select` starts counting again. */
        set_err(err, errlen, "frame size or format changes mid-stream (%dx%d to %dx%d)",
                d->src_w, d->src_h, f->width, f->height);
        return VK_ERR_UNSUPPORTED;
    }
    if (d->rot) {
        if (av_frame_make_writable(d->rot) < 0)
            return VK_ERR_DECODE;
        if (d->transpose_dir >= 0)
            transpose_frame(d->rot, f, d->transpose_dir);
        else
            hflip_frame(d->rot, f);
        d->rot->colorspace = f->colorspace;
        d->rot->color_range = f->color_range;
        src = d->rot;
    }
    if (d->vflip) {
        const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(src->format);
        av_frame_unref(d->flipped);
        if (av_frame_ref(d->flipped, src) < 0)
            return VK_ERR_DECODE;
        for (int i = 0; i < 4; i++) {
            int vsub = i == 1 || i == 2 ? desc->log2_chroma_h : 0;
            int height = AV_CEIL_RSHIFT(src->height, vsub);
            if (d->flipped->data[i]) {
                d->flipped->data[i] += (ptrdiff_t)(height - 1) * d->flipped->linesize[i];
                d->flipped->linesize[i] = -d->flipped->linesize[i];
            }
        }
        src = d->flipped;
    }
    if (src->format == AV_PIX_FMT_RGB24 && src->width == d->out_w && src->height == d->out_h) {
        /* vf_scale passes such frames through untouched */
        copy_rows(dst, src->data[0], src->linesize[0], d->out_w, d->out_h);
        return 0;
    }
    if (!d->sws && (ret = make_sws(d, src)) < 0) {
        set_err(err, errlen, "cannot convert %s %dx%d to rgb24 %dx%d",
                av_get_pix_fmt_name(src->format), src->width, src->height, d->out_w, d->out_h);
        return ret;
    }
    frame_colorspace(d->sws, src);
    if (av_frame_make_writable(d->rgb) < 0)
        return VK_ERR_DECODE;
    ret = sws_scale_frame(d->sws, d->rgb, src);
    if (d->flipped)
        av_frame_unref(d->flipped);
    if (ret < 0) {
        set_err(err, errlen, "swscale failed");
        return VK_ERR_DECODE;
    }
    copy_rows(dst, d->rgb->data[0], d->rgb->linesize[0], d->out_w, d->out_h);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Seeking                                                                                    */

/* Seeks to the keyframe `k` (or an earlier one) and reads the landing packet, which becomes
 * pending. 0 with land_rank and land_pts set; RESTART when no landing can be trusted. */
static int seek_to_key(Dec *d, const Index *ix, int64_t k, int64_t target, int64_t *land_rank,
                       int64_t *land_pts)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        int64_t kk = attempt < 2 ? k : k - (attempt - 1);
        int64_t ts;
        int ret;

        if (kk < 0)
            break;
        ts = ix->key_pts[kk];
        /* Demuxers index by pts (Matroska) or dts (MP4, AVI): try pts, then the smaller dts. */
        if (attempt == 1) {
            if (ix->key_dts[kk] == AV_NOPTS_VALUE || ix->key_dts[kk] >= ts)
                continue;
            ts = ix->key_dts[kk];
        }
        if (av_seek_frame(d->in.fmt, d->in.si, ts, AVSEEK_FLAG_BACKWARD) < 0)
            continue;
        avcodec_flush_buffers(d->dec);
        av_packet_unref(d->pkt);
        d->has_pending = 0;
        d->draining = 0;
        /* Some demuxers (MPEG-PS) land on any packet: go on to the next keyframe. Packets
         * skipped before it only feed frames that precede it. */
        for (int skipped = 0; skipped < 4096; skipped++) {
            int64_t r;
            ret = av_read_frame(d->in.fmt, d->pkt);
            if (ret < 0)
                break; /* landed past the keyframe: seek earlier */
            if (d->pkt->stream_index != d->in.si || d->pkt->size == 0) {
                av_packet_unref(d->pkt);
                continue;
            }
            r = d->pkt->pts == AV_NOPTS_VALUE ? -1 : rank_of(ix, d->pkt->pts);
            if (!(d->pkt->flags & AV_PKT_FLAG_KEY) || r < 0) {
                av_packet_unref(d->pkt);
                continue;
            }
            if (r > target)
                break; /* too far: seek earlier */
            *land_rank = r;
            *land_pts = d->pkt->pts;
            d->has_pending = 1;
            return 0;
        }
        av_packet_unref(d->pkt);
    }
    return RESTART;
}

/* ------------------------------------------------------------------------------------------ */
/* One pass: with pts bookkeeping and seeks (try_index), or counting frames sequentially.     */

/* Where wanted frames go: into consecutive slots of `out`, or one at a time through `cb`
 * (converted into `scratch`). The first `skip` wanted frames were delivered by an earlier pass
 * and are neither converted nor delivered again. */
typedef struct Sink {
    uint8_t *out;
    vk_frame_cb cb;
    void *user;
    uint8_t *scratch;
    int skip;
    int delivered; /* wanted frames delivered so far, `skip` included */
} Sink;

static int deliver(Dec *d, AVFrame *f, Sink *sink, int j, size_t frame_bytes, char *err,
                   size_t errlen)
{
    int ret;
    if (j < sink->skip)
        return 0;
    if (!sink->cb)
        return convert(d, f, sink->out + (size_t)j * frame_bytes, err, errlen);
    ret = convert(d, f, sink->scratch, err, errlen);
    if (ret < 0)
        return ret;
    if (sink->cb(sink->user, j, sink->scratch) != 0) {
        set_err(err, errlen, "stopped by the caller");
        return VK_ERR_STOPPED;
    }
    sink->delivered = j + 1;
    return 0;
}

static int decode_pass(const char *path, const int64_t *want, int n, int out_w, int out_h,
                       int resize, Sink *sink, int try_index, vk_stats *stats,
                       const LogCapture *cap, char *err, size_t errlen)
{
    Dec d;
    Index ix;
    AVFrame *f = NULL;
    int pts_mode = 0, j = 0, check_seek, ret;
    int64_t counter = 0, expect = 0, floor_pts = INT64_MIN;
    const size_t frame_bytes = (size_t)out_w * out_h * 3;

    memset(&d, 0, sizeof d);
    memset(&ix, 0, sizeof ix);
    d.in.si = -1;
    d.cap = cap;
    d.out_w = out_w;
    d.out_h = out_h;
    d.resize = resize;
    d.pkt = av_packet_alloc();
    f = av_frame_alloc();
    if (!d.pkt || !f) {
        ret = VK_ERR_DECODE;
        goto end;
    }
    ret = open_decoder(&d, path, err, errlen);
    if (ret < 0)
        goto end;
    if (try_index && worth_indexing(&d.in, want, n)) {
        int64_t k;
        ret = build_index(&d.in, &ix);
        if (ret < 0) {
            ret = VK_ERR_DECODE;
            goto end;
        }
        pts_mode = ret > 0;
        k = pts_mode ? key_at_or_before(&ix, want[0]) : -1;
        /* The index has read the whole file: unless the first step is a seek, start afresh. */
        if (!(k >= 0 && ix.key_rank[k] > SEEK_GAIN)) {
            close_decoder(&d);
            ret = open_decoder(&d, path, err, errlen);
            if (ret < 0)
                goto end;
        }
    }
    stats->pts_mode = pts_mode;
    check_seek = pts_mode;
    if (pts_mode && nonref_skipping_safe(&d.in)) {
        d.skip_sent = calloc((size_t)ix.n, 1);
        if (!d.skip_sent) {
            ret = VK_ERR_DECODE;
            goto end;
        }
        d.ix = &ix;
        d.want = want;
        d.nwant = n;
    }
    while (j < n) {
        int64_t idx;
        if (check_seek) {
            int64_t k = key_at_or_before(&ix, want[j]);
            check_seek = 0;
            if (k >= 0 && ix.key_rank[k] > expect + SEEK_GAIN) {
                ret = seek_to_key(&d, &ix, k, want[j], &expect, &floor_pts);
                if (ret < 0)
                    goto end;
                stats->seeks++;
                d.skip_armed = 0;
                if (d.skip_sent)
                    memset(d.skip_sent + expect, 0, (size_t)(ix.n - expect));
            }
        }
        ret = next_frame(&d, f);
        if (ret != 0)
            break;
        stats->frames_decoded++;
        if (!d.geom_set && (ret = setup_geometry(&d, f, err, errlen)) < 0)
            goto end;
        if (pts_mode) {
            if (f->pts == AV_NOPTS_VALUE) {
                ret = RESTART;
                goto end;
            }
            if (f->pts < floor_pts) { /* leading pictures of the keyframe sought */
                av_frame_unref(f);
                continue;
            }
            /* Frames come in rank order, none missing but those sent to be skipped. */
            idx = rank_of(&ix, f->pts);
            if (idx < expect || idx > want[j]) {
                ret = RESTART;
                goto end;
            }
            for (int64_t r = expect; r < idx; r++) {
                if (!d.skip_sent || !d.skip_sent[r]) {
                    ret = RESTART;
                    goto end;
                }
            }
            expect = idx + 1;
            d.skip_armed = 1;
        } else {
            idx = counter++;
        }
        if (idx == want[j]) {
            ret = deliver(&d, f, sink, (int)j, frame_bytes, err, errlen);
            if (ret < 0)
                goto end;
            j++;
            check_seek = pts_mode;
        }
        av_frame_unref(f);
    }
    if (j < n && pts_mode) {
        /* The index promised more frames than the decoder gave: let counting decide. */
        ret = RESTART;
        goto end;
    }
    if (j < n)
        set_err(err, errlen, "%s", d.decode_error[0] ? d.decode_error : cap->last_error);
    ret = j;
end:
    av_frame_free(&f);
    free_index(&ix);
    free_dec(&d);
    return ret;
}

/* Both entry points: argument checks, a pass with seeking, a sequential pass if the first
 * one's bookkeeping disagreed (not delivering again what the first pass delivered), and the
 * check for concealed damage. */
static int decode_common(const char *path, const int64_t *indices, int n, int out_w, int out_h,
                         int resize, Sink *sink, vk_stats *stats, char *err, size_t errlen)
{
    LogCapture cap;
    LogCapture *prev = tl_capture;
    vk_stats local;
    int ret;

    pthread_once(&log_once, install_log);
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    if (err && errlen)
        err[0] = 0;
    if (!path || !indices || n <= 0 || out_w <= 0 || out_h <= 0 || (!sink->out && !sink->cb)) {
        set_err(err, errlen, "bad arguments");
        return VK_ERR_ARGS;
    }
    for (int i = 0; i < n; i++) {
        if (indices[i] < 0 || (i > 0 && indices[i] <= indices[i - 1])) {
            set_err(err, errlen, "frame indices must be sorted, unique and non-negative");
            return VK_ERR_ARGS;
        }
    }
    memset(&cap, 0, sizeof cap);
    tl_capture = &cap;
    ret = decode_pass(path, indices, n, out_w, out_h, resize, sink, 1, stats, &cap, err, errlen);
    if (ret == RESTART) {
        int seeks = stats->seeks;
        int64_t decoded = stats->frames_decoded;
        memset(stats, 0, sizeof *stats);
        stats->restarts = 1;
        stats->seeks = seeks;
        memset(&cap, 0, sizeof cap);
        if (err && errlen)
            err[0] = 0;
        /* Frames the first pass delivered were checked against the index before delivery. */
        if (sink->cb && sink->delivered > sink->skip)
            sink->skip = sink->delivered;
        ret = decode_pass(path, indices, n, out_w, out_h, resize, sink, 0, stats, &cap, err,
                          errlen);
        stats->frames_decoded += decoded;
    }
    /* Concealed damage: the frames arrived, but the decoder said the data was bad. The CLI
     * path treats its error output the same way. */
    if (ret == n && cap.decoder_errors) {
        set_err(err, errlen, "corrupt video: the decoder reported %d error(s), first: %s",
                cap.decoder_errors, cap.decoder_error);
        ret = VK_ERR_DECODE;
    }
    tl_capture = prev;
    return ret;
}

int vk_decode(const char *path, const int64_t *indices, int n, int out_w, int out_h, int resize,
              uint8_t *out_rgb, vk_stats *stats, char *err, size_t errlen)
{
    Sink sink;
    memset(&sink, 0, sizeof sink);
    sink.out = out_rgb;
    return decode_common(path, indices, n, out_w, out_h, resize, &sink, stats, err, errlen);
}

int vk_decode_each(const char *path, const int64_t *indices, int n, int out_w, int out_h,
                   int resize, vk_frame_cb cb, void *user, int skip, vk_stats *stats, char *err,
                   size_t errlen)
{
    Sink sink;
    int ret;
    memset(&sink, 0, sizeof sink);
    if (out_w <= 0 || out_h <= 0 || !cb || skip < 0) {
        set_err(err, errlen, "bad arguments");
        return VK_ERR_ARGS;
    }
    sink.cb = cb;
    sink.user = user;
    sink.skip = skip;
    sink.scratch = av_malloc((size_t)out_w * out_h * 3);
    if (!sink.scratch) {
        set_err(err, errlen, "out of memory");
        return VK_ERR_DECODE;
    }
    ret = decode_common(path, indices, n, out_w, out_h, resize, &sink, stats, err, errlen);
    av_free(sink.scratch);
    return ret;
}
