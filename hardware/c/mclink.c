/*
 * mclink - the module side of the MC serial link in C99. See mclink.h for usage; the Rust
 * definition (shared/src/link/) is the reference this file follows step by step.
 */
#include "mclink.h"

#include <string.h>

/* The f32 encoding copies a float's bits into a uint32_t. */
typedef char mclink_float_is_32_bits[(sizeof(float) == sizeof(uint32_t)) ? 1 : -1];

/* Varint limits (postcard: unsigned LEB128, at most 5 bytes for a u32 with 4 bits in the
 * last, at most 10 for a u64). */
#define VARINT_MAX_U32 5u
#define VARINT_LAST_MAX_U32 0x0Fu

/* Number of variants of each enum: a tag at or above it is unknown. */
#define UPLINK_HELLO 0u
#define UPLINK_HEARTBEAT 1u
#define UPLINK_TELEMETRY 2u
#define UPLINK_ACK 3u
#define UPLINK_ERROR 4u
#define DOWNLINK_VARIANTS 4u
#define ACTION_VARIANTS 4u
#define LINK_ERROR_VARIANTS 5u
#define REFUSE_VARIANTS 5u
#define RESULT_VARIANTS 3u

const char *mclink_status_str(mclink_status_t status) {
    switch (status) {
    case MCLINK_OK: return "ok";
    case MCLINK_ERR_TOO_LONG: return "frame_too_long";
    case MCLINK_ERR_COBS: return "cobs";
    case MCLINK_ERR_TOO_SHORT: return "frame_too_short";
    case MCLINK_ERR_CRC: return "crc_mismatch";
    case MCLINK_ERR_UNKNOWN_MESSAGE: return "unknown_message";
    case MCLINK_ERR_MALFORMED: return "malformed";
    case MCLINK_ERR_INVALID: return "invalid";
    case MCLINK_ERR_OVERFLOW: return "frame_overflow";
    case MCLINK_ERR_ARGUMENT: return "bad_argument";
    }
    return "unknown_status";
}

int mclink_link_error_for(mclink_status_t status) {
    switch (status) {
    case MCLINK_ERR_TOO_LONG:
    case MCLINK_ERR_OVERFLOW: return MCLINK_LINK_ERROR_FRAME_TOO_LONG;
    case MCLINK_ERR_COBS:
    case MCLINK_ERR_TOO_SHORT:
    case MCLINK_ERR_CRC: return MCLINK_LINK_ERROR_CRC_MISMATCH;
    case MCLINK_ERR_UNKNOWN_MESSAGE: return MCLINK_LINK_ERROR_UNKNOWN_MESSAGE;
    case MCLINK_ERR_MALFORMED:
    case MCLINK_ERR_INVALID: return MCLINK_LINK_ERROR_MALFORMED;
    case MCLINK_OK:
    case MCLINK_ERR_ARGUMENT: return -1;
    }
    return -1;
}

/* ---- CRC ---- */

uint16_t mclink_crc16_update(uint16_t crc, const uint8_t *data, size_t len) {
    size_t i;
    if (data == NULL) {
        return crc;
    }
    for (i = 0; i < len; i++) {
        int bit;
        crc = (uint16_t)(crc ^ (uint16_t)(data[i] << 8));
        for (bit = 0; bit < 8; bit++) {
            bool top = (crc & 0x8000u) != 0;
            crc = (uint16_t)(crc << 1);
            if (top) {
                crc = (uint16_t)(crc ^ 0x1021u);
            }
        }
    }
    return crc;
}

uint16_t mclink_crc16(const uint8_t *data, size_t len) {
    return mclink_crc16_update(MCLINK_CRC_INIT, data, len);
}

/* ---- COBS, as a streaming encoder: the frame encoders feed it byte by byte ---- */

typedef struct {
    uint8_t *dst;
    size_t cap;
    size_t code_at; /* where the current block's code byte goes */
    size_t pos;     /* next data byte position */
    uint8_t code;   /* 1 + data bytes in the current block */
    bool overflow;
} cobs_writer_t;

static void cobs_begin(cobs_writer_t *w, uint8_t *dst, size_t cap) {
    w->dst = dst;
    w->cap = cap;
    w->code_at = 0;
    w->pos = 1;
    w->code = 1;
    w->overflow = cap == 0;
}

static void cobs_close_block(cobs_writer_t *w) {
    if (w->code_at >= w->cap) {
        w->overflow = true;
        return;
    }
    w->dst[w->code_at] = w->code;
    w->code_at = w->pos;
    w->pos++;
    w->code = 1;
}

static void cobs_put(cobs_writer_t *w, uint8_t byte) {
    if (w->overflow) {
        return;
    }
    if (byte == 0) {
        cobs_close_block(w);
        return;
    }
    if (w->pos >= w->cap) {
        w->overflow = true;
        return;
    }
    w->dst[w->pos] = byte;
    w->pos++;
    w->code++;
    if (w->code == 0xFF) {
        cobs_close_block(w);
    }
}

/* Writes the last code byte; returns the encoded length, or 0 on overflow. */
static size_t cobs_end(cobs_writer_t *w) {
    if (w->overflow || w->code_at >= w->cap) {
        w->overflow = true;
        return 0;
    }
    w->dst[w->code_at] = w->code;
    return w->pos;
}

mclink_status_t mclink_cobs_encode(const uint8_t *src, size_t src_len, uint8_t *dst,
                                   size_t dst_cap, size_t *dst_len) {
    cobs_writer_t w;
    size_t i, n;
    if (dst_len != NULL) {
        *dst_len = 0;
    }
    if ((src == NULL && src_len > 0) || dst == NULL || dst_len == NULL) {
        return MCLINK_ERR_ARGUMENT;
    }
    cobs_begin(&w, dst, dst_cap);
    for (i = 0; i < src_len && !w.overflow; i++) {
        cobs_put(&w, src[i]);
    }
    n = cobs_end(&w);
    if (w.overflow) {
        return MCLINK_ERR_OVERFLOW;
    }
    *dst_len = n;
    return MCLINK_OK;
}

mclink_status_t mclink_cobs_decode(uint8_t *buf, size_t len, size_t *out_len) {
    size_t read = 0, write = 0;
    if (out_len != NULL) {
        *out_len = 0;
    }
    if ((buf == NULL && len > 0) || out_len == NULL) {
        return MCLINK_ERR_ARGUMENT;
    }
    while (read < len) {
        uint8_t code = buf[read];
        size_t end;
        if (code == 0) {
            return MCLINK_ERR_COBS;
        }
        read++;
        /* end = read + code - 1 <= len, written so that it cannot wrap */
        if ((size_t)(code - 1u) > len - read) {
            return MCLINK_ERR_COBS;
        }
        end = read + (size_t)(code - 1u);
        while (read < end) {
            uint8_t byte = buf[read];
            if (byte == 0) {
                return MCLINK_ERR_COBS;
            }
            buf[write] = byte;
            write++;
            read++;
        }
        /* A block shorter than 254 data bytes stands for "data, then a zero", except at the
         * very end, where the implicit zero is the delimiter itself. */
        if (code != 0xFF && read < len) {
            buf[write] = 0;
            write++;
        }
    }
    *out_len = write;
    return MCLINK_OK;
}

/* ---- Accumulator ---- */

void mclink_accumulator_init(mclink_accumulator_t *acc) {
    if (acc == NULL) {
        return;
    }
    acc->len = 0;
    acc->discarded = 0;
}

mclink_acc_t mclink_accumulator_push(mclink_accumulator_t *acc, uint8_t byte, uint8_t **frame,
                                     size_t *len) {
    if (acc == NULL || frame == NULL || len == NULL) {
        return MCLINK_ACC_NONE;
    }
    *frame = NULL;
    *len = 0;
    /* Repairs a corrupted state rather than trusting it. */
    if (acc->len > MCLINK_MAX_ENCODED_LEN) {
        acc->len = 0;
    }
    if (byte == MCLINK_DELIMITER) {
        size_t n = acc->len, discarded = acc->discarded;
        acc->len = 0;
        acc->discarded = 0;
        if (discarded > 0) {
            *len = discarded;
            return MCLINK_ACC_OVERFLOW;
        }
        if (n == 0) {
            return MCLINK_ACC_NONE;
        }
        *frame = acc->buf;
        *len = n;
        return MCLINK_ACC_FRAME;
    }
    if (acc->discarded > 0) {
        if (acc->discarded < (size_t)-1) {
            acc->discarded++;
        }
    } else if (acc->len == MCLINK_MAX_ENCODED_LEN) {
        acc->discarded = acc->len + 1;
        acc->len = 0;
    } else {
        acc->buf[acc->len] = byte;
        acc->len++;
    }
    return MCLINK_ACC_NONE;
}

bool mclink_accumulator_is_mid_frame(const mclink_accumulator_t *acc) {
    return acc != NULL && (acc->len > 0 || acc->discarded > 0);
}

/* ---- Frame writer: address | postcard body | CRC, COBS-encoded on the fly ---- */

typedef struct {
    cobs_writer_t cobs;
    uint16_t crc;
    size_t raw_len; /* address + body bytes so far */
    bool too_big;   /* the body exceeds MCLINK_MAX_FRAME_LEN - 3 */
} frame_writer_t;

/* One byte of address or body: covered by the CRC. */
static void fw_byte(frame_writer_t *w, uint8_t byte) {
    if (w->raw_len >= MCLINK_MAX_FRAME_LEN - 2u) {
        w->too_big = true;
        return;
    }
    w->raw_len++;
    w->crc = mclink_crc16_update(w->crc, &byte, 1);
    cobs_put(&w->cobs, byte);
}

static void fw_begin(frame_writer_t *w, uint8_t address, uint8_t *out, size_t out_cap) {
    cobs_begin(&w->cobs, out, out_cap);
    w->crc = MCLINK_CRC_INIT;
    w->raw_len = 0;
    w->too_big = false;
    fw_byte(w, address);
}

static void fw_varint32(frame_writer_t *w, uint32_t v) {
    while (v >= 0x80u) {
        fw_byte(w, (uint8_t)((v & 0x7Fu) | 0x80u));
        v >>= 7;
    }
    fw_byte(w, (uint8_t)v);
}

static void fw_varint64(frame_writer_t *w, uint64_t v) {
    while (v >= 0x80u) {
        fw_byte(w, (uint8_t)((v & 0x7Fu) | 0x80u));
        v >>= 7;
    }
    fw_byte(w, (uint8_t)v);
}

static void fw_str(frame_writer_t *w, const char *s, size_t len) {
    size_t i;
    fw_varint32(w, (uint32_t)len);
    for (i = 0; i < len; i++) {
        fw_byte(w, (uint8_t)s[i]);
    }
}

static uint32_t float_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static void fw_f32(frame_writer_t *w, float f) {
    uint32_t bits = float_bits(f);
    fw_byte(w, (uint8_t)(bits & 0xFFu));
    fw_byte(w, (uint8_t)((bits >> 8) & 0xFFu));
    fw_byte(w, (uint8_t)((bits >> 16) & 0xFFu));
    fw_byte(w, (uint8_t)((bits >> 24) & 0xFFu));
}

/* Appends the CRC (little-endian), ends the COBS frame, writes the delimiter. */
static mclink_status_t fw_end(frame_writer_t *w, size_t *out_len) {
    uint16_t crc = w->crc;
    size_t n;
    if (w->too_big) {
        return MCLINK_ERR_OVERFLOW;
    }
    cobs_put(&w->cobs, (uint8_t)(crc & 0xFFu));
    cobs_put(&w->cobs, (uint8_t)(crc >> 8));
    n = cobs_end(&w->cobs);
    if (w->cobs.overflow || n >= w->cobs.cap) {
        return MCLINK_ERR_OVERFLOW;
    }
    w->cobs.dst[n] = MCLINK_DELIMITER;
    *out_len = n + 1;
    return MCLINK_OK;
}

/* ---- Validation of what the hub checks (shared/src/module_id.rs, message.rs) ---- */

/* Length of a NUL-terminated string, reading at most max + 1 bytes; max + 1 when longer. */
static size_t bounded_len(const char *s, size_t max) {
    size_t n = 0;
    while (n <= max && s[n] != '\0') {
        n++;
    }
    return n;
}

static bool is_alpha(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_alnum(uint8_t c) {
    return is_alpha(c) || (c >= '0' && c <= '9');
}

static bool interval_ok(uint32_t ms) {
    return ms >= MCLINK_INTERVAL_MS_MIN && ms <= MCLINK_INTERVAL_MS_MAX;
}

/* ModuleId: 3..=32 of A-Z a-z 0-9 - _, first alphanumeric. */
static bool module_id_ok(const char *s, size_t *len) {
    size_t i, n = bounded_len(s, MCLINK_MODULE_ID_MAX_LEN);
    if (n < MCLINK_MODULE_ID_MIN_LEN || n > MCLINK_MODULE_ID_MAX_LEN ||
        !is_alnum((uint8_t)s[0])) {
        return false;
    }
    for (i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (!is_alnum(c) && c != '-' && c != '_') {
            return false;
        }
    }
    *len = n;
    return true;
}

/* ReadingName: 1..=24 of a-z A-Z 0-9 _ . -, first a letter. */
static bool reading_name_ok(const char *s, size_t *len) {
    size_t i, n = bounded_len(s, MCLINK_READING_NAME_MAX_LEN);
    if (n < 1 || n > MCLINK_READING_NAME_MAX_LEN || !is_alpha((uint8_t)s[0])) {
        return false;
    }
    for (i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (!is_alnum(c) && c != '_' && c != '.' && c != '-') {
            return false;
        }
    }
    *len = n;
    return true;
}

/* FirmwareVersion: 1..=16 bytes of valid UTF-8 without control characters (Rust's
 * char::is_control: U+0000..U+001F, U+007F..U+009F). */
static bool firmware_version_ok(const char *s, size_t *len) {
    size_t i = 0, n = bounded_len(s, MCLINK_FIRMWARE_VERSION_MAX_LEN);
    const uint8_t *b = (const uint8_t *)s;
    if (n < 1 || n > MCLINK_FIRMWARE_VERSION_MAX_LEN) {
        return false;
    }
    while (i < n) {
        uint8_t c = b[i];
        uint32_t cp;
        size_t extra, k;
        if (c < 0x80u) {
            cp = c;
            extra = 0;
        } else if (c >= 0xC2u && c <= 0xDFu) {
            cp = c & 0x1Fu;
            extra = 1;
        } else if (c >= 0xE0u && c <= 0xEFu) {
            cp = c & 0x0Fu;
            extra = 2;
        } else if (c >= 0xF0u && c <= 0xF4u) {
            cp = c & 0x07u;
            extra = 3;
        } else {
            return false;
        }
        if (extra > n - i - 1) {
            return false;
        }
        for (k = 1; k <= extra; k++) {
            uint8_t cont = b[i + k];
            if ((cont & 0xC0u) != 0x80u) {
                return false;
            }
            cp = (cp << 6) | (cont & 0x3Fu);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((extra == 2 && cp < 0x800u) || (extra == 3 && cp < 0x10000u) ||
            (cp >= 0xD800u && cp <= 0xDFFFu) || cp > 0x10FFFFu) {
            return false;
        }
        if (cp < 0x20u || (cp >= 0x7Fu && cp <= 0x9Fu)) {
            return false;
        }
        i += extra + 1;
    }
    *len = n;
    return true;
}

/* ---- Uplink encoders ---- */

static mclink_status_t start(uint8_t *out, size_t *out_len) {
    if (out_len != NULL) {
        *out_len = 0;
    }
    return (out == NULL || out_len == NULL) ? MCLINK_ERR_ARGUMENT : MCLINK_OK;
}

mclink_status_t mclink_uplink_hello(uint8_t address, const mclink_hello_t *hello, uint8_t *out,
                                    size_t out_cap, size_t *out_len) {
    frame_writer_t w;
    size_t module_len = 0, fw_len = 0, name_len, i, j;
    mclink_status_t st = start(out, out_len);
    if (st != MCLINK_OK) {
        return st;
    }
    if (hello == NULL || hello->module == NULL || hello->fw == NULL ||
        (hello->readings == NULL && hello->reading_count > 0) ||
        hello->reading_count > MCLINK_MAX_READINGS ||
        !module_id_ok(hello->module, &module_len) || !firmware_version_ok(hello->fw, &fw_len) ||
        !interval_ok(hello->heartbeat_ms) || !interval_ok(hello->telemetry_ms)) {
        return MCLINK_ERR_ARGUMENT;
    }
    for (i = 0; i < hello->reading_count; i++) {
        const char *name = hello->readings[i];
        if (name == NULL || !reading_name_ok(name, &name_len)) {
            return MCLINK_ERR_ARGUMENT;
        }
        for (j = 0; j < i; j++) {
            /* both are valid names (terminated within 25 bytes) */
            if (strcmp(hello->readings[j], name) == 0) {
                return MCLINK_ERR_ARGUMENT;
            }
        }
    }
    fw_begin(&w, address, out, out_cap);
    fw_varint32(&w, UPLINK_HELLO);
    fw_byte(&w, hello->protocol);
    fw_str(&w, hello->module, module_len);
    fw_str(&w, hello->fw, fw_len);
    fw_varint32(&w, hello->heartbeat_ms);
    fw_varint32(&w, hello->telemetry_ms);
    fw_varint32(&w, (uint32_t)hello->reading_count);
    for (i = 0; i < hello->reading_count; i++) {
        (void)reading_name_ok(hello->readings[i], &name_len);
        fw_str(&w, hello->readings[i], name_len);
    }
    return fw_end(&w, out_len);
}

mclink_status_t mclink_uplink_heartbeat(uint8_t address, uint32_t seq, uint64_t uptime_ms,
                                        uint8_t *out, size_t out_cap, size_t *out_len) {
    frame_writer_t w;
    mclink_status_t st = start(out, out_len);
    if (st != MCLINK_OK) {
        return st;
    }
    fw_begin(&w, address, out, out_cap);
    fw_varint32(&w, UPLINK_HEARTBEAT);
    fw_varint32(&w, seq);
    fw_varint64(&w, uptime_ms);
    return fw_end(&w, out_len);
}

mclink_status_t mclink_uplink_telemetry(uint8_t address, uint32_t seq, uint32_t mask,
                                        const float *values, size_t count, uint8_t *out,
                                        size_t out_cap, size_t *out_len) {
    frame_writer_t w;
    size_t i, bits = 0;
    uint32_t m;
    mclink_status_t st = start(out, out_len);
    if (st != MCLINK_OK) {
        return st;
    }
    for (m = mask; m != 0; m &= m - 1u) {
        bits++;
    }
    if ((values == NULL && count > 0) || count != bits) {
        return MCLINK_ERR_ARGUMENT;
    }
    for (i = 0; i < count; i++) {
        if ((float_bits(values[i]) & 0x7F800000u) == 0x7F800000u) { /* NaN or infinite */
            return MCLINK_ERR_ARGUMENT;
        }
    }
    fw_begin(&w, address, out, out_cap);
    fw_varint32(&w, UPLINK_TELEMETRY);
    fw_varint32(&w, seq);
    fw_varint32(&w, mask);
    fw_varint32(&w, (uint32_t)count);
    for (i = 0; i < count; i++) {
        fw_f32(&w, values[i]);
    }
    return fw_end(&w, out_len);
}

mclink_status_t mclink_uplink_ack(uint8_t address, uint32_t command, uint8_t result,
                                  uint8_t *out, size_t out_cap, size_t *out_len) {
    frame_writer_t w;
    mclink_status_t st = start(out, out_len);
    if (st != MCLINK_OK) {
        return st;
    }
    if (result >= RESULT_VARIANTS) {
        return MCLINK_ERR_ARGUMENT;
    }
    fw_begin(&w, address, out, out_cap);
    fw_varint32(&w, UPLINK_ACK);
    fw_varint32(&w, command);
    fw_varint32(&w, result);
    return fw_end(&w, out_len);
}

mclink_status_t mclink_uplink_error(uint8_t address, uint8_t code, uint8_t supported,
                                    uint8_t *out, size_t out_cap, size_t *out_len) {
    frame_writer_t w;
    mclink_status_t st = start(out, out_len);
    if (st != MCLINK_OK) {
        return st;
    }
    if (code >= LINK_ERROR_VARIANTS) {
        return MCLINK_ERR_ARGUMENT;
    }
    fw_begin(&w, address, out, out_cap);
    fw_varint32(&w, UPLINK_ERROR);
    fw_varint32(&w, code);
    if (code == MCLINK_LINK_ERROR_VERSION_MISMATCH) {
        fw_byte(&w, supported);
    }
    return fw_end(&w, out_len);
}

/* ---- Downlink decoder (postcard, as serde derives it) ---- */

typedef struct {
    const uint8_t *p;
    size_t len;
    size_t at;
} reader_t;

static bool rd_u8(reader_t *r, uint8_t *v) {
    if (r->at >= r->len) {
        return false;
    }
    *v = r->p[r->at];
    r->at++;
    return true;
}

/* postcard's try_take_varint_u32: up to 5 bytes, the 5th at most 0x0F; non-minimal encodings
 * (0x80 0x00 for 0) are accepted, as postcard accepts them. */
static bool rd_varint32(reader_t *r, uint32_t *v) {
    uint32_t out = 0;
    unsigned i;
    for (i = 0; i < VARINT_MAX_U32; i++) {
        uint8_t b;
        if (!rd_u8(r, &b)) {
            return false;
        }
        out |= (uint32_t)(b & 0x7Fu) << (7u * i);
        if ((b & 0x80u) == 0) {
            if (i == VARINT_MAX_U32 - 1u && b > VARINT_LAST_MAX_U32) {
                return false;
            }
            *v = out;
            return true;
        }
    }
    return false;
}

/* An enum's variant index, which must be below `variants`. */
static bool rd_variant(reader_t *r, uint32_t variants, uint32_t *v) {
    return rd_varint32(r, v) && *v < variants;
}

mclink_status_t mclink_decode_downlink(uint8_t *frame, size_t len, mclink_downlink_t *out) {
    size_t raw_len, covered;
    uint16_t crc;
    uint32_t tag, v;
    reader_t r;
    mclink_status_t st;
    if (out == NULL || (frame == NULL && len > 0)) {
        return MCLINK_ERR_ARGUMENT;
    }
    memset(out, 0, sizeof *out);
    if (len > MCLINK_MAX_ENCODED_LEN) {
        return MCLINK_ERR_TOO_LONG;
    }
    st = mclink_cobs_decode(frame, len, &raw_len);
    if (st != MCLINK_OK) {
        return MCLINK_ERR_COBS;
    }
    /* address, at least a one-byte tag, CRC */
    if (raw_len < 4) {
        return MCLINK_ERR_TOO_SHORT;
    }
    covered = raw_len - 2;
    crc = mclink_crc16(frame, covered);
    if (frame[covered] != (uint8_t)(crc & 0xFFu) || frame[covered + 1] != (uint8_t)(crc >> 8)) {
        return MCLINK_ERR_CRC;
    }
    /* The tag check looks at the raw first byte, like Rust: 0x80 and up is unknown too. */
    if (frame[1] >= DOWNLINK_VARIANTS) {
        return MCLINK_ERR_UNKNOWN_MESSAGE;
    }
    r.p = frame + 1;
    r.len = covered - 1;
    r.at = 0;
    if (!rd_varint32(&r, &tag)) {
        return MCLINK_ERR_MALFORMED; /* unreachable: the tag is one byte below 0x80 */
    }
    st = MCLINK_OK;
    switch (tag) {
    case MCLINK_DOWN_ACCEPT:
        out->kind = MCLINK_DOWN_ACCEPT;
        if (!rd_u8(&r, &out->as.accept.protocol) ||
            !rd_varint32(&r, &out->as.accept.heartbeat_ms) ||
            !rd_varint32(&r, &out->as.accept.telemetry_ms)) {
            st = MCLINK_ERR_MALFORMED;
        }
        break;
    case MCLINK_DOWN_COMMAND:
        out->kind = MCLINK_DOWN_COMMAND;
        if (!rd_varint32(&r, &out->as.command.id) || !rd_variant(&r, ACTION_VARIANTS, &v)) {
            st = MCLINK_ERR_MALFORMED;
            break;
        }
        out->as.command.action = (mclink_action_t)v;
        if (v == MCLINK_ACTION_SET_HEARTBEAT_INTERVAL ||
            v == MCLINK_ACTION_SET_TELEMETRY_INTERVAL) {
            if (!rd_varint32(&r, &out->as.command.ms)) {
                st = MCLINK_ERR_MALFORMED;
            }
        }
        break;
    case MCLINK_DOWN_ERROR:
        out->kind = MCLINK_DOWN_ERROR;
        if (!rd_variant(&r, LINK_ERROR_VARIANTS, &v)) {
            st = MCLINK_ERR_MALFORMED;
            break;
        }
        out->as.error.code = (mclink_link_error_code_t)v;
        if (v == MCLINK_LINK_ERROR_VERSION_MISMATCH && !rd_u8(&r, &out->as.error.supported)) {
            st = MCLINK_ERR_MALFORMED;
        }
        break;
    default: /* MCLINK_DOWN_REFUSE: tag < DOWNLINK_VARIANTS was checked above */
        out->kind = MCLINK_DOWN_REFUSE;
        if (!rd_variant(&r, REFUSE_VARIANTS, &v)) {
            st = MCLINK_ERR_MALFORMED;
            break;
        }
        out->as.refuse = (mclink_refuse_reason_t)v;
        break;
    }
    if (st == MCLINK_OK && r.at != r.len) {
        st = MCLINK_ERR_MALFORMED; /* trailing bytes */
    }
    if (st == MCLINK_OK && out->kind == MCLINK_DOWN_COMMAND &&
        (out->as.command.action == MCLINK_ACTION_SET_HEARTBEAT_INTERVAL ||
         out->as.command.action == MCLINK_ACTION_SET_TELEMETRY_INTERVAL) &&
        !interval_ok(out->as.command.ms)) {
        st = MCLINK_ERR_INVALID;
    }
    if (st != MCLINK_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    out->address = frame[0];
    return MCLINK_OK;
}
